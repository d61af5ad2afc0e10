-- Each event's context, per UTC day (migration 0005): breakdowns and filters by browser, OS,
-- device and country read daily_dimensions; custom properties read daily_props. Statement
-- kinds as in utc_days.sql. A missing value is counted under '(not set)', so a breakdown
-- adds up to the totals.

-- name: daily_dimensions.upsert
-- One pass over the inserted rows into four groupings (one per dimension), rather than four
-- rows per event sorted and grouped: in each grouping set the other three columns are NULL,
-- so coalesce() picks the set's own value.
dimensions_daily AS (
    INSERT INTO daily_dimensions AS d
        (site_id, day, dimension, value, page_views, events, visitors)
    SELECT site_id, day,
           CASE WHEN GROUPING(browser) = 0 THEN 'browser' WHEN GROUPING(os) = 0 THEN 'os'
                WHEN GROUPING(device) = 0 THEN 'device' ELSE 'country' END,
           coalesce(browser, os, device, country, '(not set)'),
           count(*) FILTER (WHERE event_type = 'page_view'), count(*),
           coalesce(hll_add_agg(visitor_hash) FILTER (WHERE event_type = 'page_view'),
                    hll_empty())
    FROM inserted
    GROUP BY site_id, day, GROUPING SETS ((browser), (os), (device), (country))
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, day, dimension, value) DO UPDATE SET
        page_views = d.page_views + EXCLUDED.page_views,
        events = d.events + EXCLUDED.events,
        visitors = hll_union(d.visitors, EXCLUDED.visitors)
)

-- name: daily_dimensions.delete
DELETE FROM daily_dimensions
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_dimensions.recount
INSERT INTO daily_dimensions (site_id, day, dimension, value, page_views, events, visitors)
SELECT e.site_id, e.day, v.dimension, coalesce(v.value, '(not set)'),
       count(*) FILTER (WHERE e.event_type = 'page_view'), count(*),
       coalesce(hll_add_agg(hll_hash_text(e.user_id)) FILTER (WHERE e.event_type = 'page_view'),
                hll_empty())
FROM events e
CROSS JOIN LATERAL (VALUES ('browser', e.browser), ('os', e.os), ('device', e.device),
                           ('country', e.country)) AS v (dimension, value)
WHERE e.day = ANY(%(days)s) AND (%(site)s::text IS NULL OR e.site_id = %(site)s)
GROUP BY 1, 2, 3, 4

-- name: daily_dimensions.expected
SELECT e.site_id, e.day, v.dimension, coalesce(v.value, '(not set)'),
       count(*) FILTER (WHERE e.event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(hll_add_agg(hll_hash_text(e.user_id))
                                FILTER (WHERE e.event_type = 'page_view')), 0)
FROM events e
CROSS JOIN LATERAL (VALUES ('browser', e.browser), ('os', e.os), ('device', e.device),
                           ('country', e.country)) AS v (dimension, value)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: daily_dimensions.stored
SELECT site_id, day, dimension, value, page_views, events, hll_cardinality(visitors)
FROM daily_dimensions ORDER BY 1, 2, 3, 4

-- name: daily_props.upsert
props_daily AS (
    INSERT INTO daily_props AS p (site_id, day, event_type, key, value, events, visitors)
    SELECT i.site_id, i.day, i.event_type, kv.key, kv.value, count(*),
           hll_add_agg(i.visitor_hash)
    FROM inserted i CROSS JOIN LATERAL jsonb_each_text(i.props) AS kv
    WHERE i.props IS NOT NULL AND kv.value IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (site_id, day, event_type, key, value) DO UPDATE SET
        events = p.events + EXCLUDED.events,
        visitors = hll_union(p.visitors, EXCLUDED.visitors)
)

-- name: daily_props.delete
DELETE FROM daily_props
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_props.recount
INSERT INTO daily_props (site_id, day, event_type, key, value, events, visitors)
SELECT e.site_id, e.day, e.event_type, kv.key, kv.value, count(*),
       hll_add_agg(hll_hash_text(e.user_id))
FROM events e CROSS JOIN LATERAL jsonb_each_text(e.props) AS kv
WHERE e.day = ANY(%(days)s) AND (%(site)s::text IS NULL OR e.site_id = %(site)s)
  AND e.props IS NOT NULL AND kv.value IS NOT NULL
GROUP BY 1, 2, 3, 4, 5

-- name: daily_props.expected
SELECT e.site_id, e.day, e.event_type, kv.key, kv.value, count(*),
       hll_cardinality(hll_add_agg(hll_hash_text(e.user_id)))
FROM events e CROSS JOIN LATERAL jsonb_each_text(e.props) AS kv
WHERE e.props IS NOT NULL AND kv.value IS NOT NULL
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5

-- name: daily_props.stored
SELECT site_id, day, event_type, key, value, events, hll_cardinality(visitors)
FROM daily_props ORDER BY 1, 2, 3, 4, 5
