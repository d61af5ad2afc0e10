-- The batch statement's own CTEs (consumer/rollups/__init__.py assembles the statement):
-- its head, the shared inputs some rollups read, and its tail. Each rollup's CTE is its
-- `<table>.upsert` in the other files.

-- name: batch.head
-- The inserted rows are counted once at the finest grain every rollup needs, `counts` (site,
-- day, 15 minutes, event type, path: events and a sketch of their visitors), and each rollup is
-- a regrouping of those few thousand rows rather than another pass over the batch; the context
-- rollups regroup `context_counts` (per site, day, 15 minutes and context values) the same way. Only the
-- exact unique-user set (daily_visitor_ids) reads user-level rows.
--
-- An id the emitter chose (an idempotency key) counts once per site even when a retry is
-- dated on another day: the time of a retry is corrected anew (sent_at) or clamped to its
-- own receipt, which can cross midnight. Such rows are kept once per (site, id) in the batch
-- (the earliest day) and left out when the id is already stored on the day before or after.
-- Ids the API assigned (UUIDv7s, fresh per request) skip both steps.
WITH inserted AS (
    INSERT INTO events (day, event_id, site_id, event_type, path, user_id, event_time,
                        received_at, browser, os, device, country, referrer_host,
                        referrer_source, utm_source, utm_medium, utm_campaign, utm_content,
                        utm_term, props)
    SELECT day, event_id, site_id, event_type, path, user_id, event_time, received_at,
           browser, os, device, country, referrer_host, referrer_source, utm_source,
           utm_medium, utm_campaign, utm_content, utm_term, props
    FROM staging_events
    WHERE NOT emitter_id
    UNION ALL
    SELECT day, event_id, site_id, event_type, path, user_id, event_time, received_at,
           browser, os, device, country, referrer_host, referrer_source, utm_source,
           utm_medium, utm_campaign, utm_content, utm_term, props
    FROM (
        SELECT DISTINCT ON (site_id, event_id) *
        FROM staging_events WHERE emitter_id
        ORDER BY site_id, event_id, day
    ) AS chosen
    -- A scalar subquery, not NOT EXISTS: the planner would make the latter an anti-join
    -- over every stored event; this is two index probes per row.
    WHERE (SELECT true FROM events e
           WHERE e.day IN (chosen.day - 1, chosen.day + 1)
             AND e.event_id = chosen.event_id AND e.site_id = chosen.site_id
           LIMIT 1) IS NULL
    ON CONFLICT DO NOTHING
    -- The visitor's hash once per row, for every sketch of the statement.
    RETURNING day, site_id, event_type, path, user_id, event_time, browser, os, device,
              country, props, hll_hash_text(user_id) AS visitor_hash, event_id, referrer_host,
              referrer_source, utm_source, utm_medium, utm_campaign, utm_content, utm_term
),
-- What the visits need of each inserted row, kept for the statements that place them
-- after this one (consumer/sessions_store.py): replays and duplicates never get here.
visit_events_kept AS (
    INSERT INTO visit_events
    SELECT site_id, user_id, event_time, event_id, event_type = 'page_view', path,
           referrer_host, referrer_source, utm_source, utm_medium, utm_campaign, utm_content,
           utm_term, browser, os, device, country
    FROM inserted
),
-- Its text keys in byte order (COLLATE "C"): the grouping sorts the whole batch, and so do
-- the rollups' own sorts of these rows; byte order compares without the locale, and it is the
-- order every upsert locks its keys in anyway (docs/decisions/0009-collate-c-sort.md).
counts AS MATERIALIZED (
    SELECT site_id COLLATE "C" AS site_id, day,
           date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00') AS bucket,
           event_type COLLATE "C" AS event_type, path COLLATE "C" AS path,
           count(*) AS events, hll_add_agg(visitor_hash) AS visitors
    FROM inserted GROUP BY 1, 2, 3, 4, 5
),
page_counts AS (
    SELECT site_id, day, bucket, path, events, visitors FROM counts WHERE event_type = 'page_view'
)

-- name: batch.local_counts
-- `counts` in each of the site's configured zones (site_zones). A 15-minute bucket lies
-- inside one local day in every zone in use, so `counts` regroups exactly; a site with no
-- configured zone joins no row here and costs nothing.
local_counts AS MATERIALIZED (
    SELECT c.site_id, z.timezone, (c.bucket AT TIME ZONE z.timezone)::date AS day,
           c.event_type, c.path, c.events, c.visitors
    FROM counts c JOIN site_zones z ON z.site_id = c.site_id
)

-- name: batch.context_counts
-- The inserted rows grouped once by their 15-minute bucket and four context values (a batch
-- holds a few hundred such combinations a site and bucket, not one per event):
-- daily_dimensions, quarter_hour_dimensions and daily_dimension_pairs regroup these rows
-- rather than sorting the batch each. A missing value is '(not set)' before
-- grouping: grouped apart, it and a literal '(not set)' would be two groups of one row, which
-- an upsert cannot write twice.
context_counts AS MATERIALIZED (
    SELECT site_id, day,
           date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00') AS bucket,
           coalesce(browser, '(not set)') AS browser,
           coalesce(os, '(not set)') AS os, coalesce(device, '(not set)') AS device,
           coalesce(country, '(not set)') AS country,
           count(*) FILTER (WHERE event_type = 'page_view') AS page_views, count(*) AS events,
           hll_add_agg(visitor_hash) FILTER (WHERE event_type = 'page_view') AS visitors
    FROM inserted
    GROUP BY 1, 2, 3, 4, 5, 6, 7
)

-- name: batch.sealed
-- The seal's watermark (consumer/seal.py): rows of days before it are late events of sealed
-- days, usually none.
sealed AS (
    SELECT sealed_before FROM sealed_days
)

-- name: batch.site_versions
-- The sites whose stored events this batch changes, and their events' UTC days: the kept
-- stats answers that read those days are computed again (ingest/stats_answers.py). Last of
-- the statement, after every rollup's lock: two batches that share a site (one spread over
-- partitions by HOT_SITES) already wait for each other at that site's rollup rows, before
-- they get here, and the site's row is locked before its days'. A version left unstamped (a
-- batch of a consumer before migration 0020) moves into `unstamped` (schema.sql).
site_versions_bumped AS (
    INSERT INTO site_versions AS v (site_id, version, stamped)
    SELECT DISTINCT site_id COLLATE "C", 1, 1 FROM inserted ORDER BY 1
    ON CONFLICT (site_id) DO UPDATE SET
        version = v.version + 1, stamped = v.version + 1,
        unstamped = CASE WHEN v.stamped < v.version THEN v.version ELSE v.unstamped END
    RETURNING site_id, version
),
site_days_stamped AS (
    INSERT INTO site_day_versions AS d (site_id, day, version)
    SELECT c.site_id, c.day, b.version
    FROM (SELECT DISTINCT site_id, day FROM counts) AS c
    JOIN site_versions_bumped b ON b.site_id = c.site_id
    ORDER BY 1, 2
    ON CONFLICT (site_id, day) DO UPDATE SET version = EXCLUDED.version
)

-- name: batch.tail
SELECT count(*) FROM inserted
