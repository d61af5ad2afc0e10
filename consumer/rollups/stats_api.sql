-- The stats API's UTC rollups (/api/v1/stats/*). Sketches merge with hll_union, so a batch
-- adds to what earlier batches stored, and a sketch of a group is the union of the sketches
-- of its parts; the tests compare cardinalities (a union of stored sketches has the same
-- registers as one sketch built from the raw rows in one pass).
--
-- Statement kinds as in utc_days.sql.

-- name: daily_visitors.upsert
visitors_daily AS (
    INSERT INTO daily_visitors AS v (site_id, day, visitors)
    SELECT site_id, day, hll_union_agg(visitors) FROM page_counts
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (site_id, day) DO UPDATE SET visitors = hll_union(v.visitors, EXCLUDED.visitors)
)

-- name: daily_visitors.delete
DELETE FROM daily_visitors
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_visitors.recount
INSERT INTO daily_visitors (site_id, day, visitors)
SELECT site_id, day, hll_add_agg(hll_hash_text(user_id)) FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
  AND event_type = 'page_view'
GROUP BY 1, 2

-- name: daily_visitors.expected
SELECT site_id, day, hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events WHERE event_type = 'page_view'
GROUP BY 1, 2 ORDER BY 1, 2

-- name: daily_visitors.stored
SELECT site_id, day, hll_cardinality(visitors) FROM daily_visitors ORDER BY 1, 2

-- name: quarter_hour_stats.upsert
quarter_hours AS (
    INSERT INTO quarter_hour_stats AS q (site_id, bucket, page_views, events, visitors)
    SELECT site_id, bucket, coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0),
           sum(events),
           coalesce(hll_union_agg(visitors) FILTER (WHERE event_type = 'page_view'), hll_empty())
    FROM counts GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (site_id, bucket) DO UPDATE SET
        page_views = q.page_views + EXCLUDED.page_views,
        events = q.events + EXCLUDED.events,
        visitors = hll_union(q.visitors, EXCLUDED.visitors)
)

-- name: quarter_hour_stats.delete
DELETE FROM quarter_hour_stats
WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: quarter_hour_stats.recount
INSERT INTO quarter_hour_stats (site_id, bucket, page_views, events, visitors)
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'),
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       coalesce(hll_add_agg(hll_hash_text(user_id)) FILTER (WHERE event_type = 'page_view'),
                hll_empty())
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
GROUP BY 1, 2

-- name: quarter_hour_stats.expected
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'),
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id))
                FILTER (WHERE event_type = 'page_view')), 0)
FROM events GROUP BY 1, 2 ORDER BY 1, 2

-- name: quarter_hour_stats.stored
SELECT site_id, bucket, page_views, events, hll_cardinality(visitors)
FROM quarter_hour_stats ORDER BY 1, 2

-- name: quarter_hour_paths.upsert
paths_quarter_hours AS (
    INSERT INTO quarter_hour_paths AS qp (site_id, bucket, path, page_views, visitors)
    SELECT site_id, bucket, path, sum(events), hll_union_agg(visitors) FROM page_counts
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, bucket, path) DO UPDATE SET
        page_views = qp.page_views + EXCLUDED.page_views, visitors = hll_union(qp.visitors, EXCLUDED.visitors)
)

-- name: quarter_hour_paths.delete
DELETE FROM quarter_hour_paths
WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: quarter_hour_paths.recount
INSERT INTO quarter_hour_paths (site_id, bucket, path, page_views, visitors)
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'), path,
       count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
  AND event_type = 'page_view'
GROUP BY 1, 2, 3

-- name: quarter_hour_paths.expected
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'), path,
       count(*), hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events WHERE event_type = 'page_view' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: quarter_hour_paths.stored
SELECT site_id, bucket, path, page_views, hll_cardinality(visitors)
FROM quarter_hour_paths ORDER BY 1, 2, 3

-- name: hourly_paths.upsert
paths_hourly AS (
    INSERT INTO hourly_paths AS hp (site_id, hour, path, page_views, visitors)
    SELECT site_id, date_trunc('hour', bucket, 'UTC'), path,
           sum(events), hll_union_agg(visitors)
    FROM page_counts
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, hour, path) DO UPDATE SET
        page_views = hp.page_views + EXCLUDED.page_views, visitors = hll_union(hp.visitors, EXCLUDED.visitors)
)

-- name: hourly_paths.delete
DELETE FROM hourly_paths
WHERE (hour AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: hourly_paths.recount
INSERT INTO hourly_paths (site_id, hour, path, page_views, visitors)
SELECT site_id, date_trunc('hour', event_time, 'UTC'), path,
       count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
  AND event_type = 'page_view'
GROUP BY 1, 2, 3

-- name: hourly_paths.expected
SELECT site_id, date_trunc('hour', event_time, 'UTC'), path,
       count(*), hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events WHERE event_type = 'page_view' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: hourly_paths.stored
SELECT site_id, hour, path, page_views, hll_cardinality(visitors)
FROM hourly_paths ORDER BY 1, 2, 3

-- name: quarter_hour_event_types.upsert
event_types_quarter_hours AS (
    INSERT INTO quarter_hour_event_types AS qe (site_id, bucket, event_type, events, visitors)
    SELECT site_id, bucket, event_type, sum(events), hll_union_agg(visitors) FROM counts
    WHERE event_type <> 'page_view'
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, bucket, event_type) DO UPDATE SET
        events = qe.events + EXCLUDED.events, visitors = hll_union(qe.visitors, EXCLUDED.visitors)
)

-- name: quarter_hour_event_types.delete
DELETE FROM quarter_hour_event_types
WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: quarter_hour_event_types.recount
INSERT INTO quarter_hour_event_types (site_id, bucket, event_type, events, visitors)
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'),
       event_type, count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
  AND event_type <> 'page_view'
GROUP BY 1, 2, 3

-- name: quarter_hour_event_types.expected
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'),
       event_type, count(*), hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events WHERE event_type <> 'page_view' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: quarter_hour_event_types.stored
SELECT site_id, bucket, event_type, events, hll_cardinality(visitors)
FROM quarter_hour_event_types ORDER BY 1, 2, 3

-- name: quarter_hour_event_paths.upsert
event_paths_quarter_hours AS (
    INSERT INTO quarter_hour_event_paths AS qe (site_id, bucket, path, event_type, events, visitors)
    SELECT site_id, bucket, path, event_type, sum(events), hll_union_agg(visitors) FROM counts
    WHERE event_type <> 'page_view'
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, bucket, path, event_type) DO UPDATE SET
        events = qe.events + EXCLUDED.events, visitors = hll_union(qe.visitors, EXCLUDED.visitors)
)

-- name: quarter_hour_event_paths.delete
DELETE FROM quarter_hour_event_paths
WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: quarter_hour_event_paths.recount
INSERT INTO quarter_hour_event_paths (site_id, bucket, path, event_type, events, visitors)
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'), path,
       event_type, count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
  AND event_type <> 'page_view'
GROUP BY 1, 2, 3, 4

-- name: quarter_hour_event_paths.expected
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'), path,
       event_type, count(*), hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events WHERE event_type <> 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: quarter_hour_event_paths.stored
SELECT site_id, bucket, path, event_type, events, hll_cardinality(visitors)
FROM quarter_hour_event_paths ORDER BY 1, 2, 3, 4

-- name: daily_details.upsert
details_daily AS (
    INSERT INTO daily_details AS d (site_id, day, event_type, path, events, visitors)
    SELECT site_id, day, event_type, path, sum(events), hll_union_agg(visitors)
    FROM counts GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, day, event_type, path) DO UPDATE SET
        events = d.events + EXCLUDED.events, visitors = hll_union(d.visitors, EXCLUDED.visitors)
)

-- name: daily_details.delete
DELETE FROM daily_details
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_details.recount
INSERT INTO daily_details (site_id, day, event_type, path, events, visitors)
SELECT site_id, day, event_type, path, count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
GROUP BY 1, 2, 3, 4

-- name: daily_details.expected
SELECT site_id, day, event_type, path, count(*),
       hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: daily_details.stored
SELECT site_id, day, event_type, path, events, hll_cardinality(visitors)
FROM daily_details ORDER BY 1, 2, 3, 4

-- name: monthly_paths.upsert
paths_monthly AS (
    INSERT INTO monthly_paths AS m (site_id, month, path, page_views)
    SELECT site_id, date_trunc('month', day)::date, path, sum(events)
    FROM page_counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, month, path) DO UPDATE SET page_views = m.page_views + EXCLUDED.page_views
)

-- name: monthly_paths.delete
-- Whole months: those of the days rebuilt.
DELETE FROM monthly_paths
WHERE month IN (SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: monthly_paths.recount
-- Summed from daily_paths (rebuilt before it; it outlives raw-event retention).
INSERT INTO monthly_paths (site_id, month, path, page_views)
SELECT site_id, month, path, sum(page_views)
FROM (SELECT site_id, date_trunc('month', day)::date AS month, path, page_views FROM daily_paths
      WHERE (%(site)s::text IS NULL OR site_id = %(site)s)) p
WHERE month IN (SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
GROUP BY 1, 2, 3

-- name: monthly_paths.expected
SELECT site_id, date_trunc('month', day)::date, path, count(*) FROM events
WHERE event_type = 'page_view' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: monthly_paths.stored
SELECT site_id, month, path, page_views FROM monthly_paths ORDER BY 1, 2, 3

-- name: daily_event_types.upsert
event_types_daily AS (
    INSERT INTO daily_event_types AS t (site_id, day, event_type, events, visitors)
    SELECT site_id, day, event_type, sum(events), hll_union_agg(visitors)
    FROM counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, day, event_type) DO UPDATE SET
        events = t.events + EXCLUDED.events, visitors = hll_union(t.visitors, EXCLUDED.visitors)
)

-- name: daily_event_types.delete
DELETE FROM daily_event_types
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_event_types.recount
INSERT INTO daily_event_types (site_id, day, event_type, events, visitors)
SELECT site_id, day, event_type, count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
GROUP BY 1, 2, 3

-- name: daily_event_types.expected
SELECT site_id, day, event_type, count(*), hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: daily_event_types.stored
SELECT site_id, day, event_type, events, hll_cardinality(visitors)
FROM daily_event_types ORDER BY 1, 2, 3
