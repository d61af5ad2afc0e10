-- Each event's context by pairs of dimensions, per UTC day (migration 0009): a breakdown by one
-- of browser, OS, device and country filtered on another reads the rows of that pair here, a
-- few rows a day, instead of every raw event of the range
-- (docs/decisions/0023-dimension-pairs.md). Each of the six pairs is kept once, its
-- dimensions in the order browser, os, device, country (dimension_a first): a filter on
-- either side reads the pair's rows of the range and keeps its value's. A missing value is
-- '(not set)', as in daily_dimensions. Statement kinds as in utc_days.sql.

-- name: daily_dimension_pairs.upsert
-- The batch's context combinations (`context_counts`), each counted under its six pairs: six
-- rows per combination rather than per event.
dimension_pairs_daily AS (
    INSERT INTO daily_dimension_pairs AS d
        (site_id, dimension_a, dimension_b, day, value_a, value_b, page_views, events,
         visitors)
    SELECT c.site_id, p.dimension_a, p.dimension_b, c.day, p.value_a, p.value_b,
           sum(c.page_views), sum(c.events), coalesce(hll_union_agg(c.visitors), hll_empty())
    FROM context_counts AS c
    CROSS JOIN LATERAL (VALUES
        ('browser', c.browser, 'os', c.os), ('browser', c.browser, 'device', c.device),
        ('browser', c.browser, 'country', c.country), ('os', c.os, 'device', c.device),
        ('os', c.os, 'country', c.country), ('device', c.device, 'country', c.country)
    ) AS p (dimension_a, value_a, dimension_b, value_b)
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (site_id, dimension_a, dimension_b, day, value_a, value_b) DO UPDATE SET
        page_views = d.page_views + EXCLUDED.page_views,
        events = d.events + EXCLUDED.events,
        visitors = hll_union(d.visitors, EXCLUDED.visitors)
)

-- name: daily_dimension_pairs.delete
DELETE FROM daily_dimension_pairs
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_dimension_pairs.recount
INSERT INTO daily_dimension_pairs
    (site_id, dimension_a, dimension_b, day, value_a, value_b, page_views, events, visitors)
SELECT c.site_id, p.dimension_a, p.dimension_b, c.day, p.value_a, p.value_b,
       sum(c.page_views), sum(c.events), coalesce(hll_union_agg(c.visitors), hll_empty())
FROM (
    SELECT site_id, day, coalesce(browser, '(not set)') AS browser,
           coalesce(os, '(not set)') AS os, coalesce(device, '(not set)') AS device,
           coalesce(country, '(not set)') AS country,
           count(*) FILTER (WHERE event_type = 'page_view') AS page_views, count(*) AS events,
           hll_add_agg(hll_hash_text(user_id)) FILTER (WHERE event_type = 'page_view')
               AS visitors
    FROM events
    WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
    GROUP BY 1, 2, 3, 4, 5, 6
) AS c
CROSS JOIN LATERAL (VALUES
    ('browser', c.browser, 'os', c.os), ('browser', c.browser, 'device', c.device),
    ('browser', c.browser, 'country', c.country), ('os', c.os, 'device', c.device),
    ('os', c.os, 'country', c.country), ('device', c.device, 'country', c.country)
) AS p (dimension_a, value_a, dimension_b, value_b)
GROUP BY 1, 2, 3, 4, 5, 6

-- name: daily_dimension_pairs.expected
-- Straight from the events, one row per event and pair.
SELECT e.site_id, p.dimension_a, p.dimension_b, e.day, coalesce(p.value_a, '(not set)'),
       coalesce(p.value_b, '(not set)'),
       count(*) FILTER (WHERE e.event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(hll_add_agg(hll_hash_text(e.user_id))
                                FILTER (WHERE e.event_type = 'page_view')), 0)
FROM events e
CROSS JOIN LATERAL (VALUES
    ('browser', e.browser, 'os', e.os), ('browser', e.browser, 'device', e.device),
    ('browser', e.browser, 'country', e.country), ('os', e.os, 'device', e.device),
    ('os', e.os, 'country', e.country), ('device', e.device, 'country', e.country)
) AS p (dimension_a, value_a, dimension_b, value_b)
GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6

-- name: daily_dimension_pairs.stored
SELECT site_id, dimension_a, dimension_b, day, value_a, value_b, page_views, events,
       hll_cardinality(visitors)
FROM daily_dimension_pairs ORDER BY 1, 2, 3, 4, 5, 6
