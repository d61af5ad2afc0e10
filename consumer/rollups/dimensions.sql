-- Each event's context, per UTC day (migration 0005) and per 15-minute bucket (0014):
-- breakdowns and filters by browser, OS, device and country read daily_dimensions, and other
-- zones' edges quarter_hour_dimensions; custom properties read daily_props. Statement
-- kinds as in utc_days.sql. A missing value is counted under '(not set)', so a breakdown
-- adds up to the totals.

-- name: daily_dimensions.upsert
-- The batch's context combinations (`context_counts`) into four groupings, one per
-- dimension: in each grouping set the other three columns are NULL, so coalesce() picks the
-- set's own value (`context_counts` holds no NULL value: a missing one is '(not set)').
dimensions_daily AS (
    INSERT INTO daily_dimensions AS d
        (site_id, day, dimension, value, page_views, events, visitors)
    SELECT site_id, day,
           CASE WHEN GROUPING(browser) = 0 THEN 'browser' WHEN GROUPING(os) = 0 THEN 'os'
                WHEN GROUPING(device) = 0 THEN 'device' ELSE 'country' END,
           coalesce(browser, os, device, country),
           sum(page_views), sum(events), coalesce(hll_union_agg(visitors), hll_empty())
    FROM context_counts
    GROUP BY site_id, day, GROUPING SETS ((browser), (os), (device), (country))
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, day, dimension, value) DO UPDATE SET
        page_views = d.page_views + EXCLUDED.page_views,
        events = d.events + EXCLUDED.events,
        visitors = hll_union(d.visitors, EXCLUDED.visitors)
)

-- name: quarter_hour_dimensions.upsert
-- The same per 15-minute bucket, for the edges of other zones' ranges.
dimensions_quarter_hours AS (
    INSERT INTO quarter_hour_dimensions AS q
        (site_id, bucket, dimension, value, page_views, events, visitors)
    SELECT site_id, bucket,
           CASE WHEN GROUPING(browser) = 0 THEN 'browser' WHEN GROUPING(os) = 0 THEN 'os'
                WHEN GROUPING(device) = 0 THEN 'device' ELSE 'country' END,
           coalesce(browser, os, device, country),
           sum(page_views), sum(events), coalesce(hll_union_agg(visitors), hll_empty())
    FROM context_counts
    GROUP BY site_id, bucket, GROUPING SETS ((browser), (os), (device), (country))
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (site_id, bucket, dimension, value) DO UPDATE SET
        page_views = q.page_views + EXCLUDED.page_views,
        events = q.events + EXCLUDED.events,
        visitors = hll_union(q.visitors, EXCLUDED.visitors)
)

-- name: quarter_hour_dimensions.delete
DELETE FROM quarter_hour_dimensions
WHERE (bucket AT TIME ZONE 'UTC')::date = ANY(%(days)s)
  AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: quarter_hour_dimensions.recount
INSERT INTO quarter_hour_dimensions
    (site_id, bucket, dimension, value, page_views, events, visitors)
SELECT e.site_id, date_bin('15 minutes', e.event_time, timestamptz '2000-01-01 00:00+00'),
       v.dimension, coalesce(v.value, '(not set)'),
       count(*) FILTER (WHERE e.event_type = 'page_view'), count(*),
       coalesce(hll_add_agg(hll_hash_text(e.user_id)) FILTER (WHERE e.event_type = 'page_view'),
                hll_empty())
FROM events e
CROSS JOIN LATERAL (VALUES ('browser', e.browser), ('os', e.os), ('device', e.device),
                           ('country', e.country)) AS v (dimension, value)
WHERE e.day = ANY(%(days)s) AND (%(site)s::text IS NULL OR e.site_id = %(site)s)
GROUP BY 1, 2, 3, 4

-- name: quarter_hour_dimensions.expected
SELECT e.site_id, date_bin('15 minutes', e.event_time, timestamptz '2000-01-01 00:00+00'),
       v.dimension, coalesce(v.value, '(not set)'),
       count(*) FILTER (WHERE e.event_type = 'page_view'), count(*),
       coalesce(hll_cardinality(
           hll_add_agg(hll_hash_text(e.user_id)) FILTER (WHERE e.event_type = 'page_view')), 0)
FROM events e
CROSS JOIN LATERAL (VALUES ('browser', e.browser), ('os', e.os), ('device', e.device),
                           ('country', e.country)) AS v (dimension, value)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4

-- name: quarter_hour_dimensions.stored
SELECT site_id, bucket, dimension, value, page_views, events, hll_cardinality(visitors)
FROM quarter_hour_dimensions ORDER BY 1, 2, 3, 4

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

-- Custom properties are the emitter's own text, so what one site can add to daily_props is
-- bounded, per (site, UTC day, event type):
-- - at most 30 keys: the first keys seen are rolled up, a later key is not (its events
--   still hold it in events.props);
-- - per key, at most 100 values besides '(other)': the first values seen keep a row each,
--   and the events of any later value are counted under the key's '(other)' row (as are
--   those of a value that is literally '(other)').
-- "First" is by batch: a batch fills the room a group has left with its new keys (values)
-- by most events in the batch, then by name, so a group never holds more than the caps.
-- Two batches of one site run one after the other (one partition, fenced by its offsets
-- row); only when a site's events reach two partitions at once (the topic's partition count
-- changed) could both fill the same room, passing a cap by at most one batch's new keys or
-- values.
-- Whatever was kept stays exact: a kept value's row counts every event with that value, since
-- a value is refused only when its key is full, and a full key never takes a new value; the
-- '(other)' row counts the rest of the key's events. A rebuild (recount) keeps, per group, the
-- keys and values with the most events instead.

-- name: daily_props.upsert
-- The batch's properties, one row per (event, key): expanded once, from the few events that
-- have any, rather than in each step that reads them.
props_pairs AS MATERIALIZED (
    SELECT i.site_id, i.day, i.event_type, kv.key, kv.value, i.visitor_hash
    FROM inserted i CROSS JOIN LATERAL jsonb_each_text(i.props) AS kv
    WHERE i.props IS NOT NULL AND kv.value IS NOT NULL
),
-- The batch's property keys once per (site, day, event type, key), with their events.
props_keys AS MATERIALIZED (
    SELECT site_id, day, event_type, key, count(*) AS events
    FROM props_pairs GROUP BY 1, 2, 3, 4
),
-- The caps read daily_props inside its INSERT, whose lock (ROW EXCLUSIVE) is then taken
-- before the reads' own, in the lock order. The reads are ranges of the primary key, bounded
-- by the caps: per group of the batch, its stored keys; per kept key of the batch, its stored
-- values. Keys, then values, are decided before anything is sketched, and only where there
-- is room is anything ranked: a full group or key costs a hashed look-up per property.
props_daily AS (
    INSERT INTO daily_props AS p (site_id, day, event_type, key, value, events, visitors)
    -- The groups come from the batch's keys, whose estimate stays near the batch's size (a
    -- far larger one would put the statement's cost past jit_above_cost, and compiling it
    -- takes seconds). A group's stored keys are at most 30 keys of at most 101 rows each.
    WITH stored_keys AS MATERIALIZED (
        SELECT g.site_id, g.day, g.event_type, s.key
        FROM (SELECT DISTINCT site_id, day, event_type FROM props_keys) AS g
        CROSS JOIN LATERAL (SELECT DISTINCT s.key FROM daily_props s
                            WHERE s.site_id = g.site_id AND s.day = g.day
                              AND s.event_type = g.event_type) AS s
    ),
    key_room AS MATERIALIZED (
        SELECT g.site_id, g.day, g.event_type, 30 - count(s.key) AS room
        FROM (SELECT DISTINCT site_id, day, event_type FROM props_keys) AS g
        LEFT JOIN stored_keys s USING (site_id, day, event_type)
        GROUP BY 1, 2, 3
    ),
    kept_keys AS MATERIALIZED (
        SELECT site_id, day, event_type, key
        FROM props_keys JOIN stored_keys USING (site_id, day, event_type, key)
        UNION ALL
        SELECT site_id, day, event_type, key
        FROM (SELECT b.site_id, b.day, b.event_type, b.key, r.room,
                     row_number() OVER (PARTITION BY b.site_id, b.day, b.event_type
                                        ORDER BY b.events DESC, b.key) AS rank
              FROM props_keys b JOIN key_room r USING (site_id, day, event_type)
              WHERE r.room > 0
                AND NOT EXISTS (SELECT FROM stored_keys s
                                WHERE s.site_id = b.site_id AND s.day = b.day
                                  AND s.event_type = b.event_type AND s.key = b.key)) AS new
        WHERE rank <= room
    ),
    -- Membership tests below are `IN (SELECT ...)` in a select list: PostgreSQL hashes the
    -- (small) set once, whatever its estimate of the batch's rows, where a join planned on
    -- that estimate could loop over the set for each of a batch's properties.
    batch_pairs AS MATERIALIZED (
        SELECT site_id, day, event_type, key, value, visitor_hash,
               (site_id, day, event_type, key) IN (SELECT * FROM kept_keys) AS kept
        FROM props_pairs
    ),
    stored_values AS MATERIALIZED (
        SELECT k.site_id, k.day, k.event_type, k.key, s.value
        FROM kept_keys k
        CROSS JOIN LATERAL (SELECT s.value FROM daily_props s
                            WHERE s.site_id = k.site_id AND s.day = k.day
                              AND s.event_type = k.event_type AND s.key = k.key
                              AND s.value <> '(other)') AS s
    ),
    value_room AS MATERIALIZED (
        SELECT k.site_id, k.day, k.event_type, k.key, 100 - count(s.value) AS room
        FROM kept_keys k LEFT JOIN stored_values s USING (site_id, day, event_type, key)
        GROUP BY 1, 2, 3, 4
        HAVING 100 - count(s.value) > 0
    ),
    -- A full key (no room) has no new values to rank: nothing to count or sort.
    new_values AS MATERIALIZED (
        SELECT site_id, day, event_type, key, value, count(*) AS events
        FROM batch_pairs
        WHERE kept AND value <> '(other)'
          AND (site_id, day, event_type, key) IN (SELECT site_id, day, event_type, key
                                                  FROM value_room)
          AND (site_id, day, event_type, key, value) NOT IN (SELECT * FROM stored_values)
        GROUP BY 1, 2, 3, 4, 5
    ),
    kept_values AS MATERIALIZED (
        SELECT * FROM stored_values
        UNION ALL
        SELECT site_id, day, event_type, key, value
        FROM (SELECT n.site_id, n.day, n.event_type, n.key, n.value, r.room,
                     row_number() OVER (PARTITION BY n.site_id, n.day, n.event_type, n.key
                                        ORDER BY n.events DESC, n.value) AS rank
              FROM new_values n JOIN value_room r USING (site_id, day, event_type, key)) AS new
        WHERE rank <= room
    )
    SELECT site_id, day, event_type, key,
           CASE WHEN (site_id, day, event_type, key, value) IN (SELECT * FROM kept_values)
                THEN value ELSE '(other)' END,
           count(*), hll_add_agg(visitor_hash)
    FROM batch_pairs WHERE kept
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (site_id, day, event_type, key, value) DO UPDATE SET
        events = p.events + EXCLUDED.events,
        visitors = hll_union(p.visitors, EXCLUDED.visitors)
)

-- name: daily_props.delete
DELETE FROM daily_props
WHERE day = ANY(%(days)s) AND (%(site)s::text IS NULL OR site_id = %(site)s)

-- name: daily_props.recount
-- The caps as a batch applies them, with the group's keys and values ranked by their events
-- over the whole day (a literal '(other)' value last: it takes no place).
WITH counted AS (
    SELECT e.site_id, e.day, e.event_type, kv.key, kv.value, count(*) AS events,
           hll_add_agg(hll_hash_text(e.user_id)) AS visitors
    FROM events e CROSS JOIN LATERAL jsonb_each_text(e.props) AS kv
    WHERE e.day = ANY(%(days)s) AND (%(site)s::text IS NULL OR e.site_id = %(site)s)
      AND e.props IS NOT NULL AND kv.value IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
),
kept_keys AS (
    SELECT site_id, day, event_type, key
    FROM (SELECT site_id, day, event_type, key,
                 row_number() OVER (PARTITION BY site_id, day, event_type
                                    ORDER BY sum(events) DESC, key) AS rank
          FROM counted GROUP BY 1, 2, 3, 4) AS k
    WHERE rank <= 30
)
INSERT INTO daily_props (site_id, day, event_type, key, value, events, visitors)
SELECT site_id, day, event_type, key,
       CASE WHEN rank <= 100 THEN value ELSE '(other)' END, sum(events), hll_union_agg(visitors)
FROM (SELECT c.*, row_number() OVER (PARTITION BY site_id, day, event_type, key
                                     ORDER BY value = '(other)', events DESC, value) AS rank
      FROM counted c JOIN kept_keys USING (site_id, day, event_type, key)) AS v
GROUP BY 1, 2, 3, 4, 5

-- name: daily_props.expected
-- Not a recount: which keys and values a batch kept depends on the order events came in, which
-- the raw rows do not hold. So this regroups the raw events by the keys and values daily_props
-- holds (the rest of a kept key under '(other)', keys not kept left out) and the check then
-- shows each kept row exact, '(other)' the rest of its key, no row without events; a group
-- past a cap (more than 30 keys, or a key with more than 100 values) has no expected rows,
-- so the check fails there. That the first keys and values were the ones kept is for the
-- tests to show (tests/integration/test_prop_bounds.py).
WITH kept_keys AS (
    SELECT site_id, day, event_type, key
    FROM (SELECT site_id, day, event_type, key,
                 count(*) OVER (PARTITION BY site_id, day, event_type) AS keys
          FROM daily_props GROUP BY 1, 2, 3, 4) AS k
    WHERE keys <= 30
),
kept_values AS (
    SELECT site_id, day, event_type, key, value
    FROM (SELECT site_id, day, event_type, key, value,
                 count(*) OVER (PARTITION BY site_id, day, event_type, key) AS kept
          FROM daily_props WHERE value <> '(other)') AS v
    WHERE kept <= 100
)
SELECT e.site_id, e.day, e.event_type, kv.key, coalesce(v.value, '(other)'), count(*),
       hll_cardinality(hll_add_agg(hll_hash_text(e.user_id)))
FROM events e CROSS JOIN LATERAL jsonb_each_text(e.props) AS kv
JOIN kept_keys k ON k.site_id = e.site_id AND k.day = e.day AND k.event_type = e.event_type
                AND k.key = kv.key
LEFT JOIN kept_values v ON v.site_id = e.site_id AND v.day = e.day
                       AND v.event_type = e.event_type AND v.key = kv.key AND v.value = kv.value
WHERE e.props IS NOT NULL AND kv.value IS NOT NULL
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5

-- name: daily_props.stored
SELECT site_id, day, event_type, key, value, events, hll_cardinality(visitors)
FROM daily_props ORDER BY 1, 2, 3, 4, 5
