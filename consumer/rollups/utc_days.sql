-- The UTC rollups the dashboard (/stats) reads: per site and day, path and hour.
--
-- Each rollup's statements, named `<table>.<kind>`:
--   upsert    its CTE in the batch statement, reading `inserted`, `counts`, `page_counts`
--             (batch.sql); keys sorted, so concurrent writers lock rows in the same order,
--             and COLLATE "C" (byte order) sorts text faster than a linguistic collation;
--   delete, recount   `rebuild` of the UTC days %(days)s (retained), %(site)s NULL for all;
--   expected, stored  the tests' check: a recount from every raw event, and the rollup as
--             stored, equal row for row (tests/support.py).

-- name: daily_visitor_ids.upsert
new_users AS (
    INSERT INTO daily_visitor_ids (site_id, day, user_id)
    SELECT site_id, day, user_id FROM inserted WHERE event_type = 'page_view' GROUP BY 1, 2, 3
    ORDER BY site_id COLLATE "C", day, user_id COLLATE "C"
    ON CONFLICT DO NOTHING
    RETURNING site_id, day
)

-- name: daily_visitor_ids.delete
DELETE FROM daily_visitor_ids
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_visitor_ids.recount
INSERT INTO daily_visitor_ids (site_id, day, user_id)
SELECT DISTINCT site_id, day, user_id FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
  AND event_type = 'page_view'

-- name: daily_visitor_ids.expected
SELECT DISTINCT site_id, day, user_id FROM events WHERE event_type = 'page_view' ORDER BY 1, 2, 3

-- name: daily_visitor_ids.stored
SELECT site_id, day, user_id FROM daily_visitor_ids ORDER BY 1, 2, 3

-- name: daily_stats.upsert
-- Unique visitors are those new_users (daily_visitor_ids) found new for the day.
daily AS (
    INSERT INTO daily_stats AS s (site_id, day, page_views, visitors, events)
    SELECT site_id, day, sum(page_views), sum(visitors), sum(events)
    FROM (
        SELECT site_id, day,
               coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0) AS page_views,
               0 AS visitors, sum(events) AS events
        FROM counts GROUP BY site_id, day
        UNION ALL
        SELECT site_id, day, 0, count(*), 0 FROM new_users GROUP BY site_id, day
    ) AS c
    GROUP BY site_id, day ORDER BY site_id COLLATE "C", day
    ON CONFLICT (site_id, day) DO UPDATE SET
        page_views = s.page_views + EXCLUDED.page_views,
        visitors = s.visitors + EXCLUDED.visitors,
        events = s.events + EXCLUDED.events
)

-- name: daily_stats.delete
DELETE FROM daily_stats
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_stats.recount
INSERT INTO daily_stats (site_id, day, page_views, visitors, events)
SELECT site_id, day, count(*) FILTER (WHERE event_type = 'page_view'),
       count(DISTINCT user_id) FILTER (WHERE event_type = 'page_view'), count(*)
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
GROUP BY site_id, day

-- name: daily_stats.expected
SELECT site_id, day, count(*) FILTER (WHERE event_type = 'page_view'),
       count(DISTINCT user_id) FILTER (WHERE event_type = 'page_view'), count(*)
FROM events GROUP BY 1, 2 ORDER BY 1, 2

-- name: daily_stats.stored
SELECT site_id, day, page_views, visitors, events FROM daily_stats
WHERE events > 0 ORDER BY 1, 2

-- name: daily_paths.upsert
paths AS (
    INSERT INTO daily_paths AS p (site_id, day, path, page_views)
    SELECT site_id, day, path, sum(events) FROM page_counts
    GROUP BY site_id, day, path ORDER BY site_id COLLATE "C", day, path COLLATE "C"
    ON CONFLICT (site_id, day, path) DO UPDATE SET page_views = p.page_views + EXCLUDED.page_views
)

-- name: daily_paths.delete
DELETE FROM daily_paths
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_paths.recount
INSERT INTO daily_paths (site_id, day, path, page_views)
SELECT site_id, day, path, count(*) FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
  AND event_type = 'page_view'
GROUP BY site_id, day, path

-- name: daily_paths.expected
SELECT site_id, day, path, count(*) FROM events WHERE event_type = 'page_view'
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: daily_paths.stored
SELECT site_id, day, path, page_views FROM daily_paths ORDER BY 1, 2, 3

-- name: hourly_stats.upsert
hourly AS (
    INSERT INTO hourly_stats AS h (site_id, hour, page_views, events, visitors)
    SELECT site_id, date_trunc('hour', bucket, 'UTC') AS hour,
           coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0), sum(events),
           coalesce(hll_union_agg(visitors) FILTER (WHERE event_type = 'page_view'), hll_empty())
    FROM counts GROUP BY 1, 2 ORDER BY site_id COLLATE "C", 2
    ON CONFLICT (site_id, hour) DO UPDATE SET
        page_views = h.page_views + EXCLUDED.page_views,
        events = h.events + EXCLUDED.events,
        visitors = hll_union(h.visitors, EXCLUDED.visitors)
)

-- name: hourly_stats.delete
DELETE FROM hourly_stats
WHERE (hour AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: hourly_stats.recount
INSERT INTO hourly_stats (site_id, hour, page_views, events, visitors)
SELECT site_id, date_trunc('hour', event_time, 'UTC'),
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       coalesce(hll_add_agg(hll_hash_text(user_id)) FILTER (WHERE event_type = 'page_view'),
                hll_empty())
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
GROUP BY 1, 2

-- name: hourly_stats.expected
SELECT site_id, date_trunc('hour', event_time, 'UTC'),
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id))
                FILTER (WHERE event_type = 'page_view')), 0)
FROM events GROUP BY 1, 2 ORDER BY 1, 2

-- name: hourly_stats.stored
SELECT site_id, hour, page_views, events, hll_cardinality(visitors)
FROM hourly_stats ORDER BY 1, 2
