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

-- name: visits.load_events
-- The events the batch statement inserted (visit_events), in the order they are placed.
SELECT site_id, visitor, event_time, page_view, path, referrer_host, referrer_source,
       utm_source, utm_medium, utm_campaign, utm_content, utm_term, browser, os, device, country
FROM visit_events
ORDER BY site_id COLLATE "C", visitor COLLATE "C", event_time, event_id

-- name: visits.load_stored
-- The stored visits the batch's events can reach, per visitor: the last one that started at
-- or before their first event (the one an in-order event continues: one index probe), and
-- any starting after it up to the timeout past their last (late events only).
WITH reach AS (
    SELECT site_id, visitor, min(event_time) AS first_at,
           max(event_time) + make_interval(secs => %(timeout_s)s) AS until
    FROM visit_events GROUP BY 1, 2
)
SELECT v.site_id, v.visitor, v.started_at, v.last_at, v.entry_page, v.exit_page,
       v.referrer_host, v.referrer_source, v.utm_source, v.utm_medium, v.utm_campaign,
       v.utm_content, v.utm_term, v.browser, v.os, v.device, v.country, v.page_views, v.events
FROM reach r
CROSS JOIN LATERAL (
    (SELECT * FROM visits v
     WHERE v.site_id = r.site_id AND v.visitor = r.visitor AND v.started_at <= r.first_at
     ORDER BY v.started_at DESC LIMIT 1)
    UNION ALL
    (SELECT * FROM visits v
     WHERE v.site_id = r.site_id AND v.visitor = r.visitor
       AND v.started_at > r.first_at AND v.started_at <= r.until)
) AS v
ORDER BY v.site_id COLLATE "C", v.visitor COLLATE "C", v.started_at

-- name: visits.head
-- visit_changes holds each visit the batch made or changed, as it is now, with its start as
-- stored (NULL for a new one). Every CTE reads the snapshot before the statement, so `was`
-- is each changed visit as stored, and a visit whose start moved is deleted under its old
-- key and inserted under its new one (no other visit holds that instant: sessions.py).
WITH changed AS MATERIALIZED (
    SELECT c.*, (c.started_at AT TIME ZONE 'UTC')::date AS day,
           hll_hash_text(c.visitor) AS visitor_hash
    FROM visit_changes c
),
was AS MATERIALIZED (
    SELECT v.* FROM visit_changes c
    JOIN visits v ON v.site_id = c.site_id AND v.visitor = c.visitor
                 AND v.started_at = c.stored_started_at
),
moved AS (
    DELETE FROM visits v USING visit_changes c
    WHERE v.site_id = c.site_id AND v.visitor = c.visitor AND v.started_at = c.stored_started_at
      AND c.started_at <> c.stored_started_at
),
stored AS (
    INSERT INTO visits AS v (site_id, visitor, started_at, last_at, day, entry_page, exit_page,
                             referrer_host, referrer_source, utm_source, utm_medium,
                             utm_campaign, utm_content, utm_term, browser, os, device, country,
                             page_views, events)
    SELECT site_id, visitor, started_at, last_at, day, entry_page, exit_page, referrer_host,
           referrer_source, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
           browser, os, device, country, page_views, events
    FROM changed
    ORDER BY site_id COLLATE "C", visitor COLLATE "C", started_at
    ON CONFLICT (site_id, visitor, started_at) DO UPDATE SET
        last_at = EXCLUDED.last_at, exit_page = EXCLUDED.exit_page,
        page_views = EXCLUDED.page_views, events = EXCLUDED.events
),
-- Each changed visit's contribution now (+) and as stored (-), at the grain of every visit
-- rollup: its bucket and day, and each dimension's value.
visit_deltas AS MATERIALIZED (
    SELECT site_id, day, date_bin('15 minutes', started_at, timestamptz '2000-01-01 00:00+00')
               AS bucket,
           1 AS visits, (events = 1 AND page_views = 1)::int AS bounces,
           floor(extract(epoch FROM last_at - started_at))::bigint AS duration, page_views,
           coalesce(referrer_source, referrer_host) AS source, referrer_host, utm_source,
           utm_medium, utm_campaign, utm_content, utm_term, entry_page, exit_page, browser, os,
           device, country, visitor_hash
    FROM changed
    UNION ALL
    SELECT site_id, day, date_bin('15 minutes', started_at, timestamptz '2000-01-01 00:00+00'),
           -1, -(events = 1 AND page_views = 1)::int,
           -floor(extract(epoch FROM last_at - started_at))::bigint, -page_views,
           coalesce(referrer_source, referrer_host), referrer_host, utm_source, utm_medium,
           utm_campaign, utm_content, utm_term, entry_page, exit_page, browser, os, device,
           country, NULL
    FROM was
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

-- name: daily_visit_dimensions.upsert
-- One pass into thirteen groupings, one per dimension: in each grouping set the other
-- columns are NULL, so coalesce() picks the set's own value. A visitor is sketched under
-- the values its visit has now.
daily_visit_dimension_deltas AS (
    INSERT INTO daily_visit_dimensions AS d
        (site_id, day, dimension, value, visits, bounces, duration, page_views, visitors)
    SELECT site_id, day,
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
                WHEN GROUPING(device) = 0 THEN 'device' ELSE 'country' END,
           coalesce(source, referrer_host, utm_source, utm_medium, utm_campaign, utm_content,
                    utm_term, entry_page, exit_page, browser, os, device, country, '(not set)'),
           sum(visits), sum(bounces), sum(duration), sum(page_views),
           coalesce(hll_add_agg(visitor_hash) FILTER (WHERE visitor_hash IS NOT NULL),
                    hll_empty())
    FROM visit_deltas
    GROUP BY site_id, day, GROUPING SETS ((source), (referrer_host), (utm_source), (utm_medium),
                                          (utm_campaign), (utm_content), (utm_term),
                                          (entry_page), (exit_page), (browser), (os), (device),
                                          (country))
    ORDER BY 1, 2, 3, 4
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
CROSS JOIN LATERAL (VALUES
    ('source', coalesce(v.referrer_source, v.referrer_host)), ('referrer', v.referrer_host),
    ('utm_source', v.utm_source), ('utm_medium', v.utm_medium),
    ('utm_campaign', v.utm_campaign), ('utm_content', v.utm_content),
    ('utm_term', v.utm_term), ('entry_page', v.entry_page), ('exit_page', v.exit_page),
    ('browser', v.browser), ('os', v.os), ('device', v.device), ('country', v.country)
) AS x (dimension, value)
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
CROSS JOIN LATERAL (VALUES
    ('source', coalesce(v.referrer_source, v.referrer_host)), ('referrer', v.referrer_host),
    ('utm_source', v.utm_source), ('utm_medium', v.utm_medium),
    ('utm_campaign', v.utm_campaign), ('utm_content', v.utm_content),
    ('utm_term', v.utm_term), ('entry_page', v.entry_page), ('exit_page', v.exit_page),
    ('browser', v.browser), ('os', v.os), ('device', v.device), ('country', v.country)
) AS x (dimension, value)
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
    CROSS JOIN LATERAL (VALUES
        ('source', coalesce(v.referrer_source, v.referrer_host)), ('referrer', v.referrer_host),
        ('utm_source', v.utm_source), ('utm_medium', v.utm_medium),
        ('utm_campaign', v.utm_campaign), ('utm_content', v.utm_content),
        ('utm_term', v.utm_term), ('entry_page', v.entry_page), ('exit_page', v.exit_page),
        ('browser', v.browser), ('os', v.os), ('device', v.device), ('country', v.country)
    ) AS x (dimension, value)
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
SELECT site_id, user_id, min(event_time), max(event_time), (min(event_time) AT TIME ZONE 'UTC')::date,
       (array_agg(path ORDER BY event_time, event_id))[1],
       (array_agg(path ORDER BY event_time DESC, event_id DESC))[1],
       count(*) FILTER (WHERE event_type = 'page_view'), count(*)
FROM numbered GROUP BY site_id, user_id, visit ORDER BY 1, 2, 3

-- name: visits.stored
SELECT site_id, visitor, started_at, last_at, day, entry_page, exit_page, page_views, events
FROM visits ORDER BY 1, 2, 3
