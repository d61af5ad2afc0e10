-- Visits (consumer/sessions.py places a batch's events; consumer/sessions_store.py runs
-- these): the statements that read what a batch can touch, the one that stores what changed
-- with the visit rollups' deltas (the `visits.head`, each visit rollup's upsert in the lock
-- order, `visits.tail`, assembled by consumer/rollups), and the tests' oracle.
--
-- A visit counts where it starts: in the 15-minute bucket and the UTC day of its first event,
-- whenever its later events come. When a batch extends a visit, its old contribution is
-- taken from every rollup row it counted in and its new one added (a visit that stops being
-- a bounce, a new exit page, a longer duration, a start moved by a late event), so the
-- sums stay exact. Sketches of visitors only grow: a visitor stays counted under a value its
-- visit no longer has (the exit page it left by before its visit went on, say).

-- name: visits.place_in_order
-- The visitors whose new events all come at or after the end of their latest stored visit
-- (in practice, all of them) are placed here: a plain sessionization of their events, the
-- first run continuing the stored visit when it starts within the timeout of its end. Their
-- visits go into visit_changes, with each continued visit as stored (`was_*`). The others
-- (a late event) are returned, for consumer/sessions.py to place.
WITH reach AS MATERIALIZED (
    SELECT site_id, visitor, min(event_time) AS first_at FROM visit_events GROUP BY 1, 2
),
latest AS MATERIALIZED (
    SELECT r.site_id, r.visitor, r.first_at, v.started_at, v.last_at, v.entry_page,
           v.exit_page, v.referrer_host, v.referrer_source, v.utm_source, v.utm_medium,
           v.utm_campaign, v.utm_content, v.utm_term, v.browser, v.os, v.device, v.country,
           v.page_views, v.events
    FROM reach r
    LEFT JOIN LATERAL (SELECT * FROM visits v
                       WHERE v.site_id = r.site_id AND v.visitor = r.visitor
                       ORDER BY v.started_at DESC LIMIT 1) AS v ON true
),
-- One sort of the events: each knows whether it starts a visit (a gap past the timeout
-- before it, or no stored visit to continue) and whether it ends one. Not materialized: the
-- runs' window below then reads it in the order it was sorted in, rather than sorting again.
marked AS (
    SELECT e.*,
           CASE WHEN lag(e.event_time) OVER w IS NULL
                THEN l.last_at IS NULL
                     OR e.event_time - l.last_at > make_interval(secs => %(timeout_s)s)
                ELSE e.event_time - lag(e.event_time) OVER w
                     > make_interval(secs => %(timeout_s)s) END AS starts,
           coalesce(lead(e.event_time) OVER w - e.event_time
                    > make_interval(secs => %(timeout_s)s), true) AS ends
    FROM visit_events e JOIN latest l USING (site_id, visitor)
    WHERE l.last_at IS NULL OR l.first_at >= l.last_at
    WINDOW w AS (PARTITION BY e.site_id, e.visitor ORDER BY e.event_time, e.event_id)
),
-- Run 0 continues the stored visit; runs 1, 2... are new visits. A run has one event that
-- ends it (its exit page) and, unless it is run 0, one that starts it (its entry and origin):
-- picked while grouping, as the min() of the one row its filter lets through (no arrays).
-- Run 0 takes its entry and origin from the stored visit (joined for run 0 only, where the
-- run's own are NULL: hence coalesce()).
runs AS (
    SELECT *, count(*) FILTER (WHERE starts) OVER (PARTITION BY site_id, visitor
                                                   ORDER BY event_time, event_id) AS run
    FROM marked
),
totals AS (
    SELECT site_id, visitor, run, count(*) AS events,
           count(*) FILTER (WHERE page_view) AS page_views,
           min(event_time) AS first_at, max(event_time) AS last_at,
           min(path) FILTER (WHERE ends) AS exit_page,
           min(path) FILTER (WHERE starts) AS entry_page,
           min(referrer_host) FILTER (WHERE starts) AS referrer_host,
           min(referrer_source) FILTER (WHERE starts) AS referrer_source,
           min(utm_source) FILTER (WHERE starts) AS utm_source,
           min(utm_medium) FILTER (WHERE starts) AS utm_medium,
           min(utm_campaign) FILTER (WHERE starts) AS utm_campaign,
           min(utm_content) FILTER (WHERE starts) AS utm_content,
           min(utm_term) FILTER (WHERE starts) AS utm_term,
           min(browser) FILTER (WHERE starts) AS browser,
           min(os) FILTER (WHERE starts) AS os,
           min(device) FILTER (WHERE starts) AS device,
           min(country) FILTER (WHERE starts) AS country
    FROM runs GROUP BY 1, 2, 3
),
placed AS (
    INSERT INTO visit_changes
    SELECT t.site_id, t.visitor, l.started_at, coalesce(l.started_at, t.first_at), t.last_at,
           coalesce(l.entry_page, t.entry_page), t.exit_page,
           coalesce(l.referrer_host, t.referrer_host),
           coalesce(l.referrer_source, t.referrer_source), coalesce(l.utm_source, t.utm_source),
           coalesce(l.utm_medium, t.utm_medium), coalesce(l.utm_campaign, t.utm_campaign),
           coalesce(l.utm_content, t.utm_content), coalesce(l.utm_term, t.utm_term),
           coalesce(l.browser, t.browser), coalesce(l.os, t.os), coalesce(l.device, t.device),
           coalesce(l.country, t.country),
           t.page_views + coalesce(l.page_views, 0), t.events + coalesce(l.events, 0),
           l.last_at, l.entry_page, l.exit_page, l.referrer_host, l.referrer_source,
           l.utm_source, l.utm_medium, l.utm_campaign, l.utm_content, l.utm_term, l.browser,
           l.os, l.device, l.country, l.page_views, l.events
    FROM totals t
    LEFT JOIN latest l ON t.run = 0 AND l.site_id = t.site_id AND l.visitor = t.visitor
)
SELECT site_id, visitor FROM latest WHERE first_at < last_at

-- name: visits.load_late_events
-- The events of the visitors place_in_order left (%(sites)s, %(visitors)s), in the order
-- consumer/sessions.py places them.
SELECT e.site_id, e.visitor, e.event_time, e.page_view, e.path, e.referrer_host,
    e.referrer_source, e.utm_source, e.utm_medium, e.utm_campaign, e.utm_content, e.utm_term,
    e.browser, e.os, e.device, e.country
FROM visit_events e
JOIN unnest(%(sites)s::text[], %(visitors)s::text[]) AS k (site_id, visitor)
  ON k.site_id = e.site_id AND k.visitor = e.visitor
ORDER BY e.site_id COLLATE "C", e.visitor COLLATE "C", e.event_time, e.event_id

-- name: visits.load_late_stored
-- The stored visits the batch's events can reach: for each event of these visitors, the last
-- visit that started at or before it and the first that started after it (two index probes).
-- Those are the only stored visits the placement rule looks at (consumer/sessions.py), so
-- what is read is bounded by the batch's events, however many visits a visitor has stored
-- between a late event and its latest one.
SELECT DISTINCT ON (v.site_id COLLATE "C", v.visitor COLLATE "C", v.started_at)
       v.site_id, v.visitor, v.started_at, v.last_at, v.entry_page, v.exit_page,
       v.referrer_host, v.referrer_source, v.utm_source, v.utm_medium, v.utm_campaign,
       v.utm_content, v.utm_term, v.browser, v.os, v.device, v.country, v.page_views, v.events
FROM (SELECT DISTINCT site_id, visitor, event_time FROM visit_events
      WHERE (site_id, visitor) IN (SELECT * FROM unnest(%(sites)s::text[],
                                                        %(visitors)s::text[]))) AS e
CROSS JOIN LATERAL (
    (SELECT * FROM visits v
     WHERE v.site_id = e.site_id AND v.visitor = e.visitor AND v.started_at <= e.event_time
     ORDER BY v.started_at DESC LIMIT 1)
    UNION ALL
    (SELECT * FROM visits v
     WHERE v.site_id = e.site_id AND v.visitor = e.visitor AND v.started_at > e.event_time
     ORDER BY v.started_at LIMIT 1)
) AS v
ORDER BY v.site_id COLLATE "C", v.visitor COLLATE "C", v.started_at

-- name: visits.delete_moved
-- The stored rows of visits whose start a late event moved (%(sites)s, %(visitors)s,
-- %(starts)s): stored again under their new start by the statement below.
DELETE FROM visits v
USING unnest(%(sites)s::text[], %(visitors)s::text[], %(starts)s::timestamptz[])
    AS m (site_id, visitor, started_at)
WHERE v.site_id = m.site_id AND v.visitor = m.visitor AND v.started_at = m.started_at

-- name: visits.cap_values
-- What one site can add to daily_visit_dimensions is bounded: per (site, UTC day, dimension)
-- of the free-text dimensions (source, referrer, UTM values, entry and exit page), at most
-- %(cap)s values besides '(other)' and '(not set)' (a literal one counts with the missing).
-- A value a changed visit takes that it did not have as stored (a new visit's, a moved
-- start's, a new exit page) and that has no row yet gets one while its group has room (the
-- batch's new values by most visits, then by name); past that the visit keeps '(other)' for
-- it, in `visits` too, so that every later change of the visit finds the row it counted
-- in, and a recount from `visits` gives the same rows. The raw events keep the value.
--
-- A group with a new value is counted (at most %(cap)s index entries). Only a group with
-- more new values than room left ("tight") reads its stored values, at most the cap's and
-- two; every visit's value in a tight group is then kept if it is one of them or one of the
-- new values admitted, else '(other)'. The values are looked up as keys of one object: what
-- is read stays within the cap whatever a flood brings, and a lookup does not hang on the
-- planner's guess of how many values there are.
WITH taken AS MATERIALIZED (
    SELECT c.site_id, (c.started_at AT TIME ZONE 'UTC')::date AS day, x.dimension, x.value
    FROM visit_changes c
    CROSS JOIN LATERAL (VALUES
        ('source', coalesce(c.referrer_source, c.referrer_host)),
        ('referrer', c.referrer_host), ('utm_source', c.utm_source),
        ('utm_medium', c.utm_medium), ('utm_campaign', c.utm_campaign),
        ('utm_content', c.utm_content), ('utm_term', c.utm_term),
        ('entry_page', c.entry_page), ('exit_page', c.exit_page)
    ) AS x (dimension, value)
    WHERE c.stored_started_at IS DISTINCT FROM c.started_at
      AND x.value NOT IN ('(other)', '(not set)')
    UNION ALL
    -- An extended visit (its start unchanged) can only have a new exit page.
    SELECT site_id, (started_at AT TIME ZONE 'UTC')::date, 'exit_page', exit_page
    FROM visit_changes
    WHERE stored_started_at = started_at AND exit_page IS DISTINCT FROM was_exit_page
      AND exit_page NOT IN ('(other)', '(not set)')
),
tight AS MATERIALIZED (
    SELECT site_id, day, dimension, room
    FROM (SELECT g.site_id, g.day, g.dimension, g.candidates,
                 %(cap)s - (SELECT count(*)
                            FROM (SELECT FROM daily_visit_dimensions d
                                  WHERE d.site_id = g.site_id AND d.day = g.day
                                    AND d.dimension = g.dimension
                                    AND d.value NOT IN ('(other)', '(not set)')
                                  LIMIT %(cap)s) AS stored) AS room
          FROM (SELECT site_id, day, dimension, count(DISTINCT value) AS candidates
                FROM taken GROUP BY 1, 2, 3) AS g) AS groups
    WHERE candidates > room
),
stored AS MATERIALIZED (
    SELECT jsonb_object_agg(concat_ws(E'\x1f', t.site_id, t.day, t.dimension, v.value), true)
               AS keys
    FROM tight t
    CROSS JOIN LATERAL (SELECT d.value FROM daily_visit_dimensions d
                        WHERE d.site_id = t.site_id AND d.day = t.day
                          AND d.dimension = t.dimension
                        LIMIT %(cap)s + 2) AS v
),
-- A tight group with room left admits its new values with the most visits (then by name).
admitted AS MATERIALIZED (
    SELECT jsonb_object_agg(concat_ws(E'\x1f', site_id, day, dimension, value), true) AS keys
    FROM (SELECT n.site_id, n.day, n.dimension, n.value, n.room,
                 row_number() OVER (PARTITION BY n.site_id, n.day, n.dimension
                                    ORDER BY n.visits DESC, n.value) AS rank
          FROM (SELECT t.site_id, t.day, t.dimension, t.value, g.room, count(*) AS visits
                FROM taken t JOIN tight g USING (site_id, day, dimension) CROSS JOIN stored s
                WHERE g.room > 0
                  AND NOT coalesce(s.keys ? concat_ws(E'\x1f', t.site_id, t.day,
                                                      t.dimension, t.value), false)
                GROUP BY 1, 2, 3, 4, 5) AS n) AS ranked
    WHERE rank <= room
),
kept AS MATERIALIZED (
    SELECT (SELECT jsonb_object_agg(concat_ws(E'\x1f', site_id, day, dimension), true)
            FROM tight) AS groups,
           coalesce((SELECT keys FROM stored), '{}') || coalesce((SELECT keys FROM admitted),
                                                                   '{}') AS allowed
)
-- Each SET reads the row as it was: a refused referrer also makes the source '(other)' when
-- the source was the referrer's host, which is a value '(other)' always has room for.
UPDATE visit_changes c SET
    referrer_source = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'source')
         AND coalesce(c.referrer_source, c.referrer_host) NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'source',
                                       coalesce(c.referrer_source, c.referrer_host))
        THEN '(other)' ELSE c.referrer_source END,
    referrer_host = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'referrer')
         AND c.referrer_host NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'referrer',
                                       c.referrer_host)
        THEN '(other)' ELSE c.referrer_host END,
    utm_source = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'utm_source')
         AND c.utm_source NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'utm_source',
                                       c.utm_source)
        THEN '(other)' ELSE c.utm_source END,
    utm_medium = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'utm_medium')
         AND c.utm_medium NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'utm_medium',
                                       c.utm_medium)
        THEN '(other)' ELSE c.utm_medium END,
    utm_campaign = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'utm_campaign')
         AND c.utm_campaign NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'utm_campaign',
                                       c.utm_campaign)
        THEN '(other)' ELSE c.utm_campaign END,
    utm_content = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'utm_content')
         AND c.utm_content NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'utm_content',
                                       c.utm_content)
        THEN '(other)' ELSE c.utm_content END,
    utm_term = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'utm_term')
         AND c.utm_term NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'utm_term',
                                       c.utm_term)
        THEN '(other)' ELSE c.utm_term END,
    entry_page = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'entry_page')
         AND c.entry_page NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'entry_page',
                                       c.entry_page)
        THEN '(other)' ELSE c.entry_page END,
    exit_page = CASE
        WHEN k.groups ? concat_ws(E'\x1f', c.site_id, (c.started_at AT TIME ZONE 'UTC')::date,
                                  'exit_page')
         AND c.exit_page NOT IN ('(other)', '(not set)')
         AND NOT k.allowed ? concat_ws(E'\x1f', c.site_id,
                                       (c.started_at AT TIME ZONE 'UTC')::date, 'exit_page',
                                       c.exit_page)
        THEN '(other)' ELSE c.exit_page END
FROM kept k
WHERE k.groups IS NOT NULL

-- name: visits.head
-- visit_changes holds each visit the batch made or changed, as it is now, and as it was
-- stored (`stored_started_at` and `was_*`, NULL for a new one).
WITH changed AS MATERIALIZED (
    SELECT c.*, (c.started_at AT TIME ZONE 'UTC')::date AS day,
           (c.stored_started_at AT TIME ZONE 'UTC')::date AS was_day,
           date_bin('15 minutes', c.started_at, timestamptz '2000-01-01 00:00+00') AS bucket,
           date_bin('15 minutes', c.stored_started_at, timestamptz '2000-01-01 00:00+00')
               AS was_bucket,
           hll_hash_text(c.visitor) AS visitor_hash
    FROM visit_changes c
),
-- An extended visit changes no indexed column unless its last event enters another quarter
-- hour (last_bucket): the update is then rewritten in its page (schema.sql, visits).
stored AS (
    INSERT INTO visits AS v (site_id, visitor, started_at, last_at, day, entry_page, exit_page,
                             referrer_host, referrer_source, utm_source, utm_medium,
                             utm_campaign, utm_content, utm_term, browser, os, device, country,
                             page_views, events, last_bucket)
    SELECT site_id, visitor, started_at, last_at, day, entry_page, exit_page, referrer_host,
           referrer_source, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
           browser, os, device, country, page_views, events,
           date_bin('15 minutes', last_at, timestamptz '2000-01-01 00:00+00')
    FROM changed
    ORDER BY site_id COLLATE "C", visitor COLLATE "C", started_at
    ON CONFLICT (site_id, visitor, started_at) DO UPDATE SET
        last_at = EXCLUDED.last_at, exit_page = EXCLUDED.exit_page,
        page_views = EXCLUDED.page_views, events = EXCLUDED.events,
        last_bucket = EXCLUDED.last_bucket
),
-- Each changed visit's contribution now (+) and as stored (-), at the grain of every visit
-- rollup: its bucket and day, and each dimension's value, a missing one as '(not set)' here
-- already (grouped apart, a missing value and a literal '(not set)' would be two groups of
-- one rollup row, which an upsert cannot write twice).
visit_deltas AS MATERIALIZED (
    SELECT site_id, day, bucket, 1 AS visits, (events = 1 AND page_views = 1)::int AS bounces,
           floor(extract(epoch FROM last_at - started_at))::bigint AS duration, page_views,
           coalesce(referrer_source, referrer_host, '(not set)') AS source,
           coalesce(referrer_host, '(not set)') AS referrer_host,
           coalesce(utm_source, '(not set)') AS utm_source,
           coalesce(utm_medium, '(not set)') AS utm_medium,
           coalesce(utm_campaign, '(not set)') AS utm_campaign,
           coalesce(utm_content, '(not set)') AS utm_content,
           coalesce(utm_term, '(not set)') AS utm_term, entry_page, exit_page,
           coalesce(browser, '(not set)') AS browser, coalesce(os, '(not set)') AS os,
           coalesce(device, '(not set)') AS device, coalesce(country, '(not set)') AS country
    FROM changed
    UNION ALL
    SELECT site_id, was_day, was_bucket, -1, -(was_events = 1 AND was_page_views = 1)::int,
           -floor(extract(epoch FROM was_last_at - stored_started_at))::bigint, -was_page_views,
           coalesce(was_referrer_source, was_referrer_host, '(not set)'),
           coalesce(was_referrer_host, '(not set)'), coalesce(was_utm_source, '(not set)'),
           coalesce(was_utm_medium, '(not set)'), coalesce(was_utm_campaign, '(not set)'),
           coalesce(was_utm_content, '(not set)'), coalesce(was_utm_term, '(not set)'),
           was_entry_page, was_exit_page, coalesce(was_browser, '(not set)'),
           coalesce(was_os, '(not set)'), coalesce(was_device, '(not set)'),
           coalesce(was_country, '(not set)')
    FROM changed WHERE stored_started_at IS NOT NULL
),
-- The visit dimension rollups' deltas, per 15-minute bucket (each bucket lies in one UTC day,
-- so the daily rows regroup them). The sums: one pass into thirteen groupings, one per
-- dimension (in each grouping set the other columns are NULL, and the set's own never is, so
-- coalesce() picks it); no sketch there, so the groupings are hashed. The sketches: a visitor
-- is added only under a value their visit did not have in that bucket (a new visit's every
-- value, a moved start's, an extended one's new exit page), which is all a sketch that only
-- grows can learn; the day's sketch learns the same (a visitor already in it is no change).
visit_dimension_sums AS MATERIALIZED (
    SELECT site_id COLLATE "C" AS site_id, day, bucket,
           CASE WHEN GROUPING(source) = 0 THEN 'source'
                WHEN GROUPING(referrer_host) = 0 THEN 'referrer'
                WHEN GROUPING(utm_source) = 0 THEN 'utm_source'
                WHEN GROUPING(utm_medium) = 0 THEN 'utm_medium'
                WHEN GROUPING(utm_campaign) = 0 THEN 'utm_campaign'
                WHEN GROUPING(utm_content) = 0 THEN 'utm_content'
                WHEN GROUPING(utm_term) = 0 THEN 'utm_term'
                WHEN GROUPING(entry_page) = 0 THEN 'entry_page'
                WHEN GROUPING(exit_page) = 0 THEN 'exit_page'
                WHEN GROUPING(browser) = 0 THEN 'browser'
                WHEN GROUPING(os) = 0 THEN 'os'
                WHEN GROUPING(device) = 0 THEN 'device' ELSE 'country' END COLLATE "C"
               AS dimension,
           coalesce(source, referrer_host, utm_source, utm_medium, utm_campaign, utm_content,
                    utm_term, entry_page, exit_page, browser, os, device, country)
               COLLATE "C" AS value,
           sum(visits) AS visits, sum(bounces) AS bounces, sum(duration) AS duration,
           sum(page_views) AS page_views
    FROM visit_deltas
    GROUP BY site_id, day, bucket,
             GROUPING SETS ((source), (referrer_host), (utm_source), (utm_medium),
                            (utm_campaign), (utm_content), (utm_term), (entry_page),
                            (exit_page), (browser), (os), (device), (country))
),
visit_dimension_sketches AS MATERIALIZED (
    SELECT c.site_id COLLATE "C" AS site_id, c.day, c.bucket,
           x.dimension COLLATE "C" AS dimension,
           coalesce(x.value, '(not set)') COLLATE "C" AS value,
           hll_add_agg(c.visitor_hash) AS visitors
    FROM changed c
    CROSS JOIN LATERAL (VALUES
        ('source', coalesce(c.referrer_source, c.referrer_host), coalesce(c.was_referrer_source,
            c.was_referrer_host)),
        ('referrer', c.referrer_host, c.was_referrer_host),
        ('utm_source', c.utm_source, c.was_utm_source),
        ('utm_medium', c.utm_medium, c.was_utm_medium),
        ('utm_campaign', c.utm_campaign, c.was_utm_campaign),
        ('utm_content', c.utm_content, c.was_utm_content),
        ('utm_term', c.utm_term, c.was_utm_term),
        ('entry_page', c.entry_page, c.was_entry_page),
        ('exit_page', c.exit_page, c.was_exit_page),
        ('browser', c.browser, c.was_browser),
        ('os', c.os, c.was_os),
        ('device', c.device, c.was_device),
        ('country', c.country, c.was_country)
    ) AS x (dimension, value, was_value)
    WHERE c.stored_started_at IS NULL OR c.bucket <> c.was_bucket
       OR x.value IS DISTINCT FROM x.was_value
    GROUP BY 1, 2, 3, 4, 5
)


-- name: visits.site_days
-- The UTC days whose visit rollups this statement changed (each changed visit's start day,
-- and its stored one's when a late event moved it) take the version the batch statement gave
-- the site (batch.site_versions), in this transaction: the kept stats answers that read
-- those days are computed again (ingest/stats_answers.py). A late event can change a day the
-- batch's events are not on.
visit_days_stamped AS (
    INSERT INTO site_day_versions AS d (site_id, day, version)
    SELECT c.site_id, c.day, v.version
    FROM (SELECT DISTINCT site_id COLLATE "C" AS site_id, day FROM visit_deltas) AS c
    JOIN site_versions v ON v.site_id = c.site_id
    ORDER BY 1, 2
    ON CONFLICT (site_id, day) DO UPDATE SET version = EXCLUDED.version
)

-- name: visits.tail
SELECT count(*) FROM changed

-- name: quarter_hour_visits.upsert
quarter_hour_visit_deltas AS (
    INSERT INTO quarter_hour_visits AS q (site_id, bucket, visits, bounces, duration, page_views)
    SELECT site_id, bucket, sum(visits), sum(bounces), sum(duration), sum(page_views)
    FROM visit_deltas GROUP BY 1, 2 ORDER BY site_id COLLATE "C", 2
    ON CONFLICT (site_id, bucket) DO UPDATE SET
        visits = q.visits + EXCLUDED.visits, bounces = q.bounces + EXCLUDED.bounces,
        duration = q.duration + EXCLUDED.duration, page_views = q.page_views + EXCLUDED.page_views
)

-- name: quarter_hour_visits.delete
DELETE FROM quarter_hour_visits
WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: quarter_hour_visits.recount
-- From the stored visits (rebuild leaves the visits themselves as they are).
INSERT INTO quarter_hour_visits (site_id, bucket, visits, bounces, duration, page_views)
SELECT site_id, date_bin('15 minutes', started_at, timestamptz '2000-01-01 00:00+00'), count(*),
       count(*) FILTER (WHERE events = 1 AND page_views = 1),
       sum(floor(extract(epoch FROM last_at - started_at)))::bigint, sum(page_views)
FROM visits
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)
GROUP BY 1, 2

-- name: quarter_hour_visits.expected
SELECT site_id, date_bin('15 minutes', started_at, timestamptz '2000-01-01 00:00+00'), count(*),
       count(*) FILTER (WHERE events = 1 AND page_views = 1),
       sum(floor(extract(epoch FROM last_at - started_at)))::bigint, sum(page_views)
FROM visits GROUP BY 1, 2 ORDER BY 1, 2

-- name: quarter_hour_visits.stored
-- A bucket every visit left (its start moved) is kept at zero: left out here.
SELECT site_id, bucket, visits, bounces, duration, page_views FROM quarter_hour_visits
WHERE (visits, bounces, duration, page_views) <> (0, 0, 0, 0) ORDER BY 1, 2

-- name: quarter_hour_visit_dimensions.upsert
quarter_hour_visit_dimension_deltas AS (
    INSERT INTO quarter_hour_visit_dimensions AS q
        (site_id, dimension, bucket, value, visits, bounces, duration, page_views, visitors)
    SELECT site_id, dimension, bucket, value, coalesce(s.visits, 0), coalesce(s.bounces, 0),
           coalesce(s.duration, 0), coalesce(s.page_views, 0),
           coalesce(k.visitors, hll_empty())
    FROM visit_dimension_sums s FULL JOIN visit_dimension_sketches k
        USING (site_id, day, bucket, dimension, value)
    ORDER BY site_id, dimension, bucket, value
    ON CONFLICT (site_id, dimension, bucket, value) DO UPDATE SET
        visits = q.visits + EXCLUDED.visits, bounces = q.bounces + EXCLUDED.bounces,
        duration = q.duration + EXCLUDED.duration, page_views = q.page_views + EXCLUDED.page_views,
        visitors = hll_union(q.visitors, EXCLUDED.visitors)
)

-- name: quarter_hour_visit_dimensions.delete
DELETE FROM quarter_hour_visit_dimensions
WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: quarter_hour_visit_dimensions.recount
-- From the stored visits: the sketches then hold only each visit's present values.
INSERT INTO quarter_hour_visit_dimensions
    (site_id, dimension, bucket, value, visits, bounces, duration, page_views, visitors)
SELECT v.site_id, x.dimension,
       date_bin('15 minutes', v.started_at, timestamptz '2000-01-01 00:00+00'),
       coalesce(x.value, '(not set)'), count(*),
       count(*) FILTER (WHERE v.events = 1 AND v.page_views = 1),
       sum(floor(extract(epoch FROM v.last_at - v.started_at)))::bigint, sum(v.page_views),
       hll_add_agg(hll_hash_text(v.visitor))
FROM visits v
CROSS JOIN LATERAL visit_dimension_values(v) AS x
WHERE v.day = ANY(%(days)s) AND (%(site)s::text IS NULL OR v.site_id = %(site)s)
GROUP BY 1, 2, 3, 4

-- name: quarter_hour_visit_dimensions.expected
-- As daily_visit_dimensions.expected, per bucket.
SELECT v.site_id, x.dimension,
       date_bin('15 minutes', v.started_at, timestamptz '2000-01-01 00:00+00'),
       coalesce(x.value, '(not set)'), count(*),
       count(*) FILTER (WHERE v.events = 1 AND v.page_views = 1),
       sum(floor(extract(epoch FROM v.last_at - v.started_at)))::bigint, sum(v.page_views),
       true
FROM visits v
CROSS JOIN LATERAL visit_dimension_values(v) AS x
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: quarter_hour_visit_dimensions.stored
-- As daily_visit_dimensions.stored, per bucket.
SELECT d.site_id, d.dimension, d.bucket, d.value, d.visits, d.bounces, d.duration,
       d.page_views,
       hll_cardinality(hll_union(d.visitors, coalesce(now.visitors, hll_empty())))
           IS NOT DISTINCT FROM hll_cardinality(d.visitors)
FROM quarter_hour_visit_dimensions d
LEFT JOIN (
    SELECT v.site_id, x.dimension,
           date_bin('15 minutes', v.started_at, timestamptz '2000-01-01 00:00+00') AS bucket,
           coalesce(x.value, '(not set)') AS value, hll_add_agg(hll_hash_text(v.visitor))
               AS visitors
    FROM visits v
    CROSS JOIN LATERAL visit_dimension_values(v) AS x
    GROUP BY 1, 2, 3, 4
) AS now USING (site_id, dimension, bucket, value)
WHERE (d.visits, d.bounces, d.duration, d.page_views) <> (0, 0, 0, 0)
ORDER BY 1, 2, 3, 4

-- name: daily_visit_dimensions.upsert
-- The quarter hours' deltas of each day, regrouped.
daily_visit_dimension_deltas AS (
    INSERT INTO daily_visit_dimensions AS d
        (site_id, day, dimension, value, visits, bounces, duration, page_views, visitors)
    SELECT site_id, day, dimension, value, sum(visits), sum(bounces), sum(duration),
           sum(page_views), coalesce(hll_union_agg(visitors), hll_empty())
    FROM (SELECT site_id, day, dimension, value, visits, bounces, duration, page_views,
                 NULL::hll AS visitors
          FROM visit_dimension_sums
          UNION ALL
          SELECT site_id, day, dimension, value, 0, 0, 0, 0, visitors
          FROM visit_dimension_sketches) AS deltas
    GROUP BY site_id, day, dimension, value
    ORDER BY site_id, day, dimension, value
    ON CONFLICT (site_id, day, dimension, value) DO UPDATE SET
        visits = d.visits + EXCLUDED.visits, bounces = d.bounces + EXCLUDED.bounces,
        duration = d.duration + EXCLUDED.duration, page_views = d.page_views + EXCLUDED.page_views,
        visitors = hll_union(d.visitors, EXCLUDED.visitors)
)

-- name: daily_visit_dimensions.delete
DELETE FROM daily_visit_dimensions
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_visit_dimensions.recount
-- From the stored visits: the sketches then hold only each visit's present values.
INSERT INTO daily_visit_dimensions
    (site_id, day, dimension, value, visits, bounces, duration, page_views, visitors)
SELECT v.site_id, v.day, x.dimension, coalesce(x.value, '(not set)'), count(*),
       count(*) FILTER (WHERE v.events = 1 AND v.page_views = 1),
       sum(floor(extract(epoch FROM v.last_at - v.started_at)))::bigint, sum(v.page_views),
       hll_add_agg(hll_hash_text(v.visitor))
FROM visits v
CROSS JOIN LATERAL visit_dimension_values(v) AS x
WHERE v.day = ANY(%(days)s) AND (%(site)s::text IS NULL OR v.site_id = %(site)s)
GROUP BY 1, 2, 3, 4

-- name: daily_visit_dimensions.expected
-- Sums exact; the sketch must hold at least the visitors of the visits that now have the
-- value (the last column: true), as it only grows.
SELECT v.site_id, v.day, x.dimension, coalesce(x.value, '(not set)'), count(*),
       count(*) FILTER (WHERE v.events = 1 AND v.page_views = 1),
       sum(floor(extract(epoch FROM v.last_at - v.started_at)))::bigint, sum(v.page_views),
       true
FROM visits v
CROSS JOIN LATERAL visit_dimension_values(v) AS x
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: daily_visit_dimensions.stored
-- Rows every visit left (a moved exit page) are kept at zero: left out here. The last column
-- says whether the sketch holds every visitor whose visit has the value now.
SELECT d.site_id, d.day, d.dimension, d.value, d.visits, d.bounces, d.duration, d.page_views,
       hll_cardinality(hll_union(d.visitors, coalesce(now.visitors, hll_empty())))
           IS NOT DISTINCT FROM hll_cardinality(d.visitors)
FROM daily_visit_dimensions d
LEFT JOIN (
    SELECT v.site_id, v.day, x.dimension, coalesce(x.value, '(not set)') AS value,
           hll_add_agg(hll_hash_text(v.visitor)) AS visitors
    FROM visits v
    CROSS JOIN LATERAL visit_dimension_values(v) AS x
    GROUP BY 1, 2, 3, 4
) AS now USING (site_id, day, dimension, value)
WHERE (d.visits, d.bounces, d.duration, d.page_views) <> (0, 0, 0, 0)
ORDER BY 1, 2, 3, 4

-- name: visits.expected
-- The tests' oracle for events that came in order: a plain sessionization of the stored
-- events, sorted by time, a gap longer than %(timeout_s)s seconds ending a visit.
WITH marked AS (
    SELECT site_id, user_id, event_time, event_id, event_type, path,
           coalesce(event_time - lag(event_time) OVER w > make_interval(secs => %(timeout_s)s),
                    true) AS starts
    FROM events
    WINDOW w AS (PARTITION BY site_id, user_id ORDER BY event_time, event_id)
),
numbered AS (
    SELECT *, count(*) FILTER (WHERE starts) OVER (PARTITION BY site_id, user_id
                                                   ORDER BY event_time, event_id) AS visit
    FROM marked
)
SELECT site_id, user_id, min(event_time), max(event_time), (min(event_time) AT TIME ZONE
    'UTC')::date,
       (array_agg(path ORDER BY event_time, event_id))[1],
       (array_agg(path ORDER BY event_time DESC, event_id DESC))[1],
       count(*) FILTER (WHERE event_type = 'page_view'), count(*),
       date_bin('15 minutes', max(event_time), timestamptz '2000-01-01 00:00+00')
FROM numbered GROUP BY site_id, user_id, visit ORDER BY 1, 2, 3

-- name: visits.stored
SELECT site_id, visitor, started_at, last_at, day, entry_page, exit_page, page_views, events,
       last_bucket
FROM visits ORDER BY 1, 2, 3
