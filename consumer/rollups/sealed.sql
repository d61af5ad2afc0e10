-- Closed days sealed into months (consumer/seal.py): a month's page views and visitors per
-- page, in UTC and in every kept zone, and its events and visitors per event type, so that a
-- month's top pages read ten rows, not ten sketches a day. `sealed_before` (sealed_days) is
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
