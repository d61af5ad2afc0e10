-- Closed days sealed into months (consumer/seal.py): a month's page views and visitors per
-- page, in UTC and in every kept zone, its events and visitors per event type, and its visit
-- sums and visitors per visit dimension and value, so that a month's top pages read ten rows,
-- not ten sketches a day. `sealed_before` (sealed_days) is
-- the watermark: the days before it are in these tables.
--
-- Statement kinds as in utc_days.sql and zones.sql, and:
--   upsert    late events, for days already sealed: usually none, so this costs a batch a
--             filter over `counts`. Last in the batch statement: a seal locks these tables
--             only, and a batch waiting for it holds no lock a seal needs; the batch then
--             reads the watermark the seal committed (its snapshot follows its locks);
--   delete, recount   `rebuild`: the sealed UTC days of the months of %(days)s, folded again
--             from the rollups rebuilt before these;
--   seal, zone_seal   a seal of the days [%(lo)s, %(hi)s) (one month at most), in UTC and
--             in the kept zones. Each (site, day) is read through the tables' keys, so a
--             seal reads the days it seals, not the whole history.

-- name: sealed_monthly_paths.upsert
late_page_views AS (
    INSERT INTO sealed_monthly_paths AS sp (site_id, timezone, month, path, page_views, visitors)
    SELECT site_id, timezone, month, path, sum(events), hll_union_agg(visitors)
    FROM (
        SELECT site_id, 'UTC' AS timezone, date_trunc('month', day)::date AS month, path,
               events, visitors
        FROM page_counts WHERE day < (SELECT sealed_before FROM sealed)
        UNION ALL
        SELECT site_id, timezone, date_trunc('month', day)::date, path, events, visitors
        FROM local_counts
        WHERE event_type = 'page_view' AND day < (SELECT sealed_before FROM sealed)
    ) late
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4, 3
    ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET
        page_views = sp.page_views + EXCLUDED.page_views, visitors = hll_union(sp.visitors, EXCLUDED.visitors)
)

-- name: sealed_monthly_paths.delete
DELETE FROM sealed_monthly_paths
WHERE timezone = 'UTC'
  AND month IN (SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: sealed_monthly_paths.recount
-- Views come from daily_paths, as those of monthly_paths do; visitors from daily_details'
-- page-view rows.
INSERT INTO sealed_monthly_paths AS sp (site_id, timezone, month, path, page_views, visitors)
SELECT p.site_id, 'UTC', date_trunc('month', p.day)::date, p.path, sum(p.page_views),
       coalesce(hll_union_agg(d.visitors), hll_empty())
FROM (
    SELECT site_id, day FROM daily_stats
    WHERE (%(site)s::text IS NULL OR site_id = %(site)s)
      AND day < (SELECT sealed_before FROM sealed_days)
      AND date_trunc('month', day)::date IN (
          SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
) s
JOIN daily_paths p ON p.site_id = s.site_id AND p.day = s.day
LEFT JOIN daily_details d ON d.site_id = p.site_id AND d.day = p.day
    AND d.event_type = 'page_view' AND d.path = p.path
GROUP BY 1, 2, 3, 4
ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET
    page_views = sp.page_views + EXCLUDED.page_views, visitors = hll_union(sp.visitors, EXCLUDED.visitors)

-- name: sealed_monthly_paths.zone_delete
DELETE FROM sealed_monthly_paths l USING site_zones z
WHERE l.site_id = z.site_id AND l.timezone = z.timezone
  AND (%(site)s::text IS NULL OR z.site_id = %(site)s)
  AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
  AND (%(lo)s::date IS NULL
       OR month BETWEEN date_trunc('month', %(lo)s::date)::date AND %(hi)s::date)

-- name: sealed_monthly_paths.zone_recount
-- The zone's sealed local days, from local_daily_paths (recounted before it).
INSERT INTO sealed_monthly_paths AS sp (site_id, timezone, month, path, page_views, visitors)
SELECT l.site_id, l.timezone, date_trunc('month', l.day)::date, l.path, sum(l.page_views),
       hll_union_agg(l.visitors)
FROM site_zones z
JOIN local_daily_paths l ON l.site_id = z.site_id AND l.timezone = z.timezone
WHERE (%(site)s::text IS NULL OR z.site_id = %(site)s)
  AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
  AND l.day < (SELECT sealed_before FROM sealed_days)
  AND (%(lo)s::date IS NULL
       OR date_trunc('month', l.day)::date
          BETWEEN date_trunc('month', %(lo)s::date)::date AND %(hi)s::date)
GROUP BY 1, 2, 3, 4
ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET
    page_views = sp.page_views + EXCLUDED.page_views, visitors = hll_union(sp.visitors, EXCLUDED.visitors)

-- name: sealed_monthly_paths.seal
INSERT INTO sealed_monthly_paths AS sp (site_id, timezone, month, path, page_views, visitors)
SELECT p.site_id, 'UTC', date_trunc('month', p.day)::date, p.path, sum(p.page_views),
       coalesce(hll_union_agg(d.visitors), hll_empty())
FROM (SELECT site_id, day FROM daily_stats WHERE day >= %(lo)s AND day < %(hi)s) s
JOIN daily_paths p ON p.site_id = s.site_id AND p.day = s.day
LEFT JOIN daily_details d ON d.site_id = p.site_id AND d.day = p.day
    AND d.event_type = 'page_view' AND d.path = p.path
GROUP BY 1, 2, 3, 4
ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET
    page_views = sp.page_views + EXCLUDED.page_views, visitors = hll_union(sp.visitors, EXCLUDED.visitors)

-- name: sealed_monthly_paths.zone_seal
INSERT INTO sealed_monthly_paths AS sp (site_id, timezone, month, path, page_views, visitors)
SELECT l.site_id, l.timezone, date_trunc('month', l.day)::date, l.path, sum(l.page_views),
       hll_union_agg(l.visitors)
FROM site_zones z
JOIN local_daily_paths l ON l.site_id = z.site_id AND l.timezone = z.timezone
WHERE l.day >= %(lo)s AND l.day < %(hi)s
GROUP BY 1, 2, 3, 4
ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET
    page_views = sp.page_views + EXCLUDED.page_views, visitors = hll_union(sp.visitors, EXCLUDED.visitors)

-- name: sealed_monthly_paths.expected
-- Page views of the days before the watermark, per UTC month and per local month of each
-- kept zone.
SELECT site_id, 'UTC', date_trunc('month', day)::date AS month, path, count(*),
       hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events
WHERE event_type = 'page_view' AND day < (SELECT sealed_before FROM sealed_days)
GROUP BY 1, 2, 3, 4
UNION ALL
SELECT e.site_id, z.timezone, date_trunc('month', (e.event_time AT TIME ZONE z.timezone)::date)::date,
       path, count(*), hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events e JOIN site_zones z ON z.site_id = e.site_id
WHERE event_type = 'page_view'
  AND (e.event_time AT TIME ZONE z.timezone)::date < (SELECT sealed_before FROM sealed_days)
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4

-- name: sealed_monthly_paths.stored
SELECT site_id, timezone, month, path, page_views, hll_cardinality(visitors)
FROM sealed_monthly_paths ORDER BY 1, 2, 3, 4

-- name: sealed_monthly_event_types.upsert
late_event_types AS (
    INSERT INTO sealed_monthly_event_types AS st (site_id, month, event_type, events, visitors)
    SELECT site_id, date_trunc('month', day)::date, event_type, sum(events), hll_union_agg(visitors)
    FROM counts WHERE day < (SELECT sealed_before FROM sealed)
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, month, event_type) DO UPDATE SET
        events = st.events + EXCLUDED.events, visitors = hll_union(st.visitors, EXCLUDED.visitors)
)

-- name: sealed_monthly_event_types.delete
DELETE FROM sealed_monthly_event_types
WHERE month IN (SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: sealed_monthly_event_types.recount
-- From daily_event_types (rebuilt before it).
INSERT INTO sealed_monthly_event_types AS st (site_id, month, event_type, events, visitors)
SELECT t.site_id, date_trunc('month', t.day)::date, t.event_type, sum(t.events),
       hll_union_agg(t.visitors)
FROM (
    SELECT site_id, day FROM daily_stats
    WHERE (%(site)s::text IS NULL OR site_id = %(site)s)
      AND day < (SELECT sealed_before FROM sealed_days)
      AND date_trunc('month', day)::date IN (
          SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
) s
JOIN daily_event_types t ON t.site_id = s.site_id AND t.day = s.day
GROUP BY 1, 2, 3
ON CONFLICT (site_id, month, event_type) DO UPDATE SET
    events = st.events + EXCLUDED.events, visitors = hll_union(st.visitors, EXCLUDED.visitors)

-- name: sealed_monthly_event_types.seal
INSERT INTO sealed_monthly_event_types AS st (site_id, month, event_type, events, visitors)
SELECT t.site_id, date_trunc('month', t.day)::date, t.event_type, sum(t.events),
       hll_union_agg(t.visitors)
FROM (SELECT site_id, day FROM daily_stats WHERE day >= %(lo)s AND day < %(hi)s) s
JOIN daily_event_types t ON t.site_id = s.site_id AND t.day = s.day
GROUP BY 1, 2, 3
ON CONFLICT (site_id, month, event_type) DO UPDATE SET
    events = st.events + EXCLUDED.events, visitors = hll_union(st.visitors, EXCLUDED.visitors)

-- name: sealed_monthly_event_types.expected
SELECT site_id, date_trunc('month', day)::date, event_type, count(*),
       hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events WHERE day < (SELECT sealed_before FROM sealed_days)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: sealed_monthly_event_types.stored
SELECT site_id, month, event_type, events, hll_cardinality(visitors)
FROM sealed_monthly_event_types ORDER BY 1, 2, 3

-- name: sealed_monthly_visit_dimensions.upsert
-- Late visit deltas, for visits starting (or that started) on a sealed day: usually none.
-- A CTE of the visit statement (visits.sql), after daily_visit_dimensions' upsert: the
-- quarter hours' sums and sketches (visits.head) folded into their months. The batch statement before it in the same
-- transaction holds the other sealed months, so no seal moves the watermark meanwhile.
late_visit_dimensions AS (
    INSERT INTO sealed_monthly_visit_dimensions AS m
        (site_id, dimension, month, value, visits, bounces, duration, page_views, visitors)
    SELECT site_id, dimension, date_trunc('month', day)::date, value,
           coalesce(sum(s.visits), 0), coalesce(sum(s.bounces), 0),
           coalesce(sum(s.duration), 0), coalesce(sum(s.page_views), 0),
           coalesce(hll_union_agg(k.visitors), hll_empty())
    FROM (SELECT * FROM visit_dimension_sums
          WHERE day < (SELECT sealed_before FROM sealed_days)) s
    FULL JOIN (SELECT * FROM visit_dimension_sketches
               WHERE day < (SELECT sealed_before FROM sealed_days)) k
        USING (site_id, day, bucket, dimension, value)
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4, 3
    ON CONFLICT (site_id, dimension, value, month) DO UPDATE SET
        visits = m.visits + EXCLUDED.visits, bounces = m.bounces + EXCLUDED.bounces,
        duration = m.duration + EXCLUDED.duration, page_views = m.page_views + EXCLUDED.page_views,
        visitors = hll_union(m.visitors, EXCLUDED.visitors)
)

-- name: sealed_monthly_visit_dimensions.delete
DELETE FROM sealed_monthly_visit_dimensions
WHERE month IN (SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: sealed_monthly_visit_dimensions.recount
-- From daily_visit_dimensions (recounted before it from the stored visits).
INSERT INTO sealed_monthly_visit_dimensions
    (site_id, dimension, month, value, visits, bounces, duration, page_views, visitors)
SELECT d.site_id, d.dimension, date_trunc('month', d.day)::date, d.value, sum(d.visits),
       sum(d.bounces), sum(d.duration), sum(d.page_views), hll_union_agg(d.visitors)
FROM (
    SELECT site_id, day FROM daily_stats
    WHERE (%(site)s::text IS NULL OR site_id = %(site)s)
      AND day < (SELECT sealed_before FROM sealed_days)
      AND date_trunc('month', day)::date IN (
          SELECT DISTINCT date_trunc('month', d)::date FROM unnest(%(days)s::date[]) d)
) s
JOIN daily_visit_dimensions d ON d.site_id = s.site_id AND d.day = s.day
GROUP BY 1, 2, 3, 4

-- name: sealed_monthly_visit_dimensions.seal
INSERT INTO sealed_monthly_visit_dimensions AS m
    (site_id, dimension, month, value, visits, bounces, duration, page_views, visitors)
SELECT d.site_id, d.dimension, date_trunc('month', d.day)::date, d.value, sum(d.visits),
       sum(d.bounces), sum(d.duration), sum(d.page_views), hll_union_agg(d.visitors)
FROM (SELECT site_id, day FROM daily_stats WHERE day >= %(lo)s AND day < %(hi)s) s
JOIN daily_visit_dimensions d ON d.site_id = s.site_id AND d.day = s.day
GROUP BY 1, 2, 3, 4
ON CONFLICT (site_id, dimension, value, month) DO UPDATE SET
    visits = m.visits + EXCLUDED.visits, bounces = m.bounces + EXCLUDED.bounces,
    duration = m.duration + EXCLUDED.duration, page_views = m.page_views + EXCLUDED.page_views,
    visitors = hll_union(m.visitors, EXCLUDED.visitors)

-- name: sealed_monthly_visit_dimensions.expected
-- The visits starting on the days before the watermark, per UTC month, as
-- daily_visit_dimensions.expected counts them per day (the sketch: true).
SELECT v.site_id, x.dimension, date_trunc('month', v.day)::date, coalesce(x.value, '(not set)'),
       count(*), count(*) FILTER (WHERE v.events = 1 AND v.page_views = 1),
       sum(floor(extract(epoch FROM v.last_at - v.started_at)))::bigint, sum(v.page_views),
       true
FROM visits v
CROSS JOIN LATERAL visit_dimension_values(v) AS x
WHERE v.day < (SELECT sealed_before FROM sealed_days)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: sealed_monthly_visit_dimensions.stored
-- Rows every visit left are kept at zero: left out here. The last column says whether the
-- sketch holds every visitor whose visit has the value now.
SELECT m.site_id, m.dimension, m.month, m.value, m.visits, m.bounces, m.duration,
       m.page_views,
       hll_cardinality(hll_union(m.visitors, coalesce(now.visitors, hll_empty())))
           IS NOT DISTINCT FROM hll_cardinality(m.visitors)
FROM sealed_monthly_visit_dimensions m
LEFT JOIN (
    SELECT v.site_id, x.dimension, date_trunc('month', v.day)::date AS month,
           coalesce(x.value, '(not set)') AS value, hll_add_agg(hll_hash_text(v.visitor)) AS visitors
    FROM visits v
    CROSS JOIN LATERAL visit_dimension_values(v) AS x
    WHERE v.day < (SELECT sealed_before FROM sealed_days)
    GROUP BY 1, 2, 3, 4
) AS now USING (site_id, dimension, month, value)
WHERE (m.visits, m.bounces, m.duration, m.page_views) <> (0, 0, 0, 0)
ORDER BY 1, 2, 3, 4
