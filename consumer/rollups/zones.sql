-- The rollups by local day of the time zones kept for a site (site_zones; consumer/zones.py).
--
-- Statement kinds as in utc_days.sql, except that these are recounted per kept zone rather
-- than from raw events (the 15-minute rollups hold every day a site has, also days retention
-- took out of `events`):
--   zone_delete, zone_recount   the zones in scope: %(site)s and %(tz)s NULL for all; the
--             local days in scope: [%(lo)s, %(hi)s], both NULL for every day. UTC buckets
--             that can fall in a local day in [lo, hi] lie within a day of it (offsets are
--             within ±14 hours).
-- The tests' `expected` recounts by local day of the raw events.

-- name: local_daily_stats.upsert
local_daily AS (
    INSERT INTO local_daily_stats AS l (site_id, timezone, day, page_views, events, visitors)
    SELECT site_id, timezone, day,
           coalesce(sum(events) FILTER (WHERE event_type = 'page_view'), 0), sum(events),
           coalesce(hll_union_agg(visitors) FILTER (WHERE event_type = 'page_view'), hll_empty())
    FROM local_counts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (site_id, timezone, day) DO UPDATE SET
        page_views = l.page_views + EXCLUDED.page_views,
        events = l.events + EXCLUDED.events,
        visitors = hll_union(l.visitors, EXCLUDED.visitors)
)

-- name: local_daily_stats.zone_delete
DELETE FROM local_daily_stats l USING site_zones z
WHERE l.site_id = z.site_id AND l.timezone = z.timezone
  AND (%(site)s::text IS NULL OR z.site_id = %(site)s)
  AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
  AND (%(lo)s::date IS NULL OR day BETWEEN %(lo)s AND %(hi)s)

-- name: local_daily_stats.zone_recount
INSERT INTO local_daily_stats (site_id, timezone, day, page_views, events, visitors)
SELECT * FROM (
    SELECT q.site_id, z.timezone, (q.bucket AT TIME ZONE z.timezone)::date AS day,
           sum(q.page_views), sum(q.events), hll_union_agg(q.visitors)
    FROM quarter_hour_stats q JOIN site_zones z ON z.site_id = q.site_id
    WHERE (%(site)s::text IS NULL OR z.site_id = %(site)s)
      AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
      AND (%(lo)s::date IS NULL
           OR (q.bucket >= (%(lo)s::date - 1)::timestamp AT TIME ZONE 'UTC'
               AND q.bucket < (%(hi)s::date + 2)::timestamp AT TIME ZONE 'UTC'))
    GROUP BY 1, 2, 3
) r WHERE (%(lo)s::date IS NULL OR day BETWEEN %(lo)s AND %(hi)s)

-- name: local_daily_stats.expected
SELECT e.site_id, z.timezone, (e.event_time AT TIME ZONE z.timezone)::date,
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(hll_add_agg(hll_hash_text(user_id))
                FILTER (WHERE event_type = 'page_view')), 0)
FROM events e JOIN site_zones z ON z.site_id = e.site_id
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3

-- name: local_daily_stats.stored
SELECT site_id, timezone, day, page_views, events, hll_cardinality(visitors)
FROM local_daily_stats ORDER BY 1, 2, 3

-- name: local_daily_paths.upsert
local_paths AS (
    INSERT INTO local_daily_paths AS lp (site_id, timezone, day, path, page_views, visitors)
    SELECT site_id, timezone, day, path, sum(events), hll_union_agg(visitors)
    FROM local_counts WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, timezone, day, path) DO UPDATE SET
        page_views = lp.page_views + EXCLUDED.page_views, visitors = hll_union(lp.visitors, EXCLUDED.visitors)
)

-- name: local_daily_paths.zone_delete
DELETE FROM local_daily_paths l USING site_zones z
WHERE l.site_id = z.site_id AND l.timezone = z.timezone
  AND (%(site)s::text IS NULL OR z.site_id = %(site)s)
  AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
  AND (%(lo)s::date IS NULL OR day BETWEEN %(lo)s AND %(hi)s)

-- name: local_daily_paths.zone_recount
INSERT INTO local_daily_paths (site_id, timezone, day, path, page_views, visitors)
SELECT * FROM (
    SELECT q.site_id, z.timezone, (q.bucket AT TIME ZONE z.timezone)::date AS day,
           q.path, sum(q.page_views), hll_union_agg(q.visitors)
    FROM quarter_hour_paths q JOIN site_zones z ON z.site_id = q.site_id
    WHERE (%(site)s::text IS NULL OR z.site_id = %(site)s)
      AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
      AND (%(lo)s::date IS NULL
           OR (q.bucket >= (%(lo)s::date - 1)::timestamp AT TIME ZONE 'UTC'
               AND q.bucket < (%(hi)s::date + 2)::timestamp AT TIME ZONE 'UTC'))
    GROUP BY 1, 2, 3, 4
) r WHERE (%(lo)s::date IS NULL OR day BETWEEN %(lo)s AND %(hi)s)

-- name: local_daily_paths.expected
SELECT e.site_id, z.timezone, (e.event_time AT TIME ZONE z.timezone)::date, path, count(*),
       hll_cardinality(hll_add_agg(hll_hash_text(user_id)))
FROM events e JOIN site_zones z ON z.site_id = e.site_id
WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: local_daily_paths.stored
SELECT site_id, timezone, day, path, page_views, hll_cardinality(visitors)
FROM local_daily_paths ORDER BY 1, 2, 3, 4

-- name: local_monthly_paths.upsert
local_monthly AS (
    INSERT INTO local_monthly_paths AS lm (site_id, timezone, month, path, page_views)
    SELECT site_id, timezone, date_trunc('month', day)::date, path, sum(events)
    FROM local_counts WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, timezone, path, month) DO UPDATE SET page_views = lm.page_views + EXCLUDED.page_views
)

-- name: local_monthly_paths.zone_delete
DELETE FROM local_monthly_paths l USING site_zones z
WHERE l.site_id = z.site_id AND l.timezone = z.timezone
  AND (%(site)s::text IS NULL OR z.site_id = %(site)s)
  AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
  AND (%(lo)s::date IS NULL
       OR month BETWEEN date_trunc('month', %(lo)s::date)::date AND %(hi)s::date)

-- name: local_monthly_paths.zone_recount
-- From local_daily_paths (recounted before it).
INSERT INTO local_monthly_paths (site_id, timezone, month, path, page_views)
SELECT * FROM (
    SELECT p.site_id, p.timezone, date_trunc('month', p.day)::date AS month, p.path,
           sum(p.page_views)
    FROM local_daily_paths p JOIN site_zones z
        ON z.site_id = p.site_id AND z.timezone = p.timezone
    WHERE (%(site)s::text IS NULL OR z.site_id = %(site)s)
      AND (%(tz)s::text IS NULL OR z.timezone = %(tz)s)
    GROUP BY 1, 2, 3, 4
) r WHERE (%(lo)s::date IS NULL
           OR month BETWEEN date_trunc('month', %(lo)s::date)::date AND %(hi)s::date)

-- name: local_monthly_paths.expected
SELECT e.site_id, z.timezone, date_trunc('month', (e.event_time AT TIME ZONE z.timezone)::date)::date,
       path, count(*)
FROM events e JOIN site_zones z ON z.site_id = e.site_id
WHERE event_type = 'page_view' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: local_monthly_paths.stored
SELECT site_id, timezone, month, path, page_views FROM local_monthly_paths ORDER BY 1, 2, 3, 4
