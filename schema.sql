-- The current database schema, as a new database gets it. `python -m consumer.migrate` (`make
-- migrate`) applies it to an empty database and records every migration as applied; an
-- existing database gets the missing numbered migrations (consumer/migrations/) instead, and
-- tests/integration/test_migrations.py proves both end at the same schema. A change is a new
-- migration and the same change here. The versions applied are in schema_migrations, kept by
-- consumer/schema.py.

-- Raw events, one partition per UTC day of the event's timestamp: retention drops a
-- partition, and a day's query touches one. The consumer creates partitions on demand
-- (ensure_events_partition below) before it writes a day it has not seen.
CREATE TABLE events (
    day          date        NOT NULL,  -- UTC day of event_time; the partition key
    event_id     uuid        NOT NULL,
    site_id      text        NOT NULL,
    event_type   text        NOT NULL,
    path         text        NOT NULL,
    user_id      text        NOT NULL,
    event_time   timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    -- The hit's context as the API derived it (core/events.py): NULL when not known or when
    -- an earlier API accepted the event. Never the client address or the user agent string.
    browser          text,
    os               text,
    device           text,  -- desktop, mobile or tablet
    country          text,  -- ISO 3166-1 alpha-2
    referrer_host    text,
    referrer_source  text,
    utm_source       text,
    utm_medium       text,
    utm_campaign     text,
    utm_content      text,
    utm_term         text,
    props            jsonb,  -- custom properties: string keys to string values
    -- The idempotency key: an event_id counts once per site, so one site's emitter cannot
    -- suppress another site's events by reusing their ids. A unique key on a partitioned
    -- table must hold the partition key, `day`; a retry whose corrected time falls on the
    -- neighbouring day is left out by the batch statement, which looks for an emitter's id
    -- there too (consumer/rollups/batch.sql). It holds for as long as the day's raw rows
    -- live: after retention, dropped_days (below) keeps replays out.
    PRIMARY KEY (day, event_id, site_id)
) PARTITION BY RANGE (day);

-- Events over a time window: the stats API reads the parts of a range that are not whole UTC
-- days (the edges of other zones' local days, filtered hourly timeseries) from raw rows. Rows
-- arrive roughly in time order, so a BRIN index (a min/max per 16 pages) narrows a window to a
-- few pages at next to no cost per batch; a B-tree on (site_id, event_time) would be more
-- selective for one site among many but costs every batch noticeably more
-- (docs/decisions/0001-brin-index-on-events.md). Each day's index has `autosummarize` off
-- (ensure_events_partition below makes it so) and the consumer summarizes its new ranges
-- itself (consumer/brin_ranges.py): autosummarize's requests overflow at a few thousand
-- events a second, and each refused one is logged with its whole statement. The option
-- stays on here, where nothing reads it any more, because PostgreSQL cannot change it on a
-- partitioned index, and a new database is built as a migrated one is.
CREATE INDEX events_time ON events USING brin (event_time)
    WITH (pages_per_range = 16, autosummarize = on);

-- Days whose raw partition retention dropped (consumer/retention.py, through
-- drop_events_partition below, which records the day in the same transaction). Their
-- rollups are all that is left of them and already count every event they had, so:
-- ensure_events_partition refuses to create their partition again (a replayed or retried
-- event would otherwise be stored and counted a second time: the unique key went with the
-- rows), and `python -m consumer.rebuild` skips them (a recount of late rows would replace
-- the full rollups). Days never stored are not recorded; retention drops their partition
-- if late events create one, and records them then.
CREATE TABLE dropped_days (
    day         date        PRIMARY KEY,
    dropped_at  timestamptz NOT NULL DEFAULT now()
);

-- Creates the partition of `events` holding day `d` if it is missing, unless retention
-- dropped that day: then it raises SQLSTATE 22023 (the data's fault: the consumer sets those
-- events aside with the message as reason). Serialized by an advisory lock so that two
-- consumers meeting a new day at once do not collide, and so that retention cannot drop a
-- day between the check and the creation. The day is made as a table of its own, then
-- attached: ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on `events` and its indexes, which
-- neither batches in flight nor stats questions hold it back from (CREATE TABLE … PARTITION
-- OF takes ACCESS EXCLUSIVE: it waited for every open batch and question, and every batch
-- after it waited for it; a DEFAULT partition, which `events` does not have, would still be
-- locked so). Its locks wait at most lock_timeout (SQLSTATE 55P03 after: a database-side
-- error, retried).
CREATE FUNCTION ensure_events_partition(d date) RETURNS void
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    part text := format('events_%s', to_char(d, 'YYYYMMDD'));
    time_index regclass := to_regclass('events_time');
    table_space text;
    index_space text := '';
    adopted regclass;
BEGIN
    IF to_regclass(part) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM dropped_days WHERE day = d)
    THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('events partitions'));
    -- Checked under the lock: retention may have dropped the day since the line above.
    IF EXISTS (SELECT 1 FROM dropped_days WHERE day = d) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('day %s was dropped by retention; events for it are refused', d);
    END IF;
    -- Where PARTITION OF would put them: the tablespaces of events and of events_time, if set.
    SELECT coalesce(' TABLESPACE ' || quote_ident(s.spcname), '') INTO table_space
    FROM pg_class AS c LEFT JOIN pg_tablespace AS s ON s.oid = c.reltablespace
    WHERE c.oid = 'events'::regclass;
    IF time_index IS NOT NULL THEN
        SELECT coalesce(' TABLESPACE ' || quote_ident(s.spcname), '') INTO index_space
        FROM pg_class AS c LEFT JOIN pg_tablespace AS s ON s.oid = c.reltablespace
        WHERE c.oid = time_index;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
        'INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMPRESSION)%s', part, table_space);
    -- Another consumer may have made it while this one waited for the lock.
    IF NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = part::regclass) THEN
        -- The day's part of events_time, as ATTACH would make it but without autosummarize:
        -- the consumer summarizes the new ranges itself (consumer/brin_ranges.py). ATTACH
        -- adopts it, and makes the day's part of the primary key.
        IF time_index IS NOT NULL THEN
            EXECUTE format(
                'CREATE INDEX IF NOT EXISTS %I ON %I USING brin (event_time) '
                'WITH (pages_per_range = 16, autosummarize = off)%s',
                part || '_event_time_idx', part, index_space);
        END IF;
        EXECUTE format(
            'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', part, d, d + 1);
        -- Unless an operator changed events_time's definition: then ATTACH made an index of
        -- its own. Keep that one, without autosummarize if it is a BRIN index (no one sees
        -- this day before the commit, so altering it waits for nothing), and drop the one
        -- made above unless another index on events adopted it.
        SELECT h.inhrelid::regclass INTO adopted
        FROM pg_inherits AS h JOIN pg_index AS i ON i.indexrelid = h.inhrelid
        WHERE h.inhparent = time_index AND i.indrelid = part::regclass;
        IF adopted IS DISTINCT FROM to_regclass(part || '_event_time_idx') THEN
            IF NOT EXISTS (
                SELECT 1 FROM pg_inherits
                WHERE inhrelid = to_regclass(part || '_event_time_idx')
            ) THEN
                EXECUTE format('DROP INDEX IF EXISTS %I', part || '_event_time_idx');
            END IF;
            IF (SELECT a.amname FROM pg_class AS c JOIN pg_am AS a ON a.oid = c.relam
                WHERE c.oid = adopted) = 'brin' THEN
                EXECUTE format('ALTER INDEX %s SET (autosummarize = off)', adopted);
            END IF;
        END IF;
    END IF;
END;
$$;

-- Drops the partition of day `d` (retention) and records the day in dropped_days, in one
-- transaction; returns whether there was a partition. Same lock and lock_timeout as above.
CREATE FUNCTION drop_events_partition(d date) RETURNS boolean
LANGUAGE plpgsql SET lock_timeout = '5s' AS $$
DECLARE
    part text := format('events_%s', to_char(d, 'YYYYMMDD'));
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('events partitions'));
    INSERT INTO dropped_days (day) VALUES (d) ON CONFLICT DO NOTHING;
    IF to_regclass(part) IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %I', part);
    RETURN true;
END;
$$;

-- Rollups, maintained by the consumer in the same transaction as the raw rows, from the rows
-- actually inserted (duplicates excluded), so they stay exact under redelivery.

-- Per (site, UTC day): page views, exact unique visitors among page views, all events.
CREATE TABLE daily_stats (
    site_id     text   NOT NULL,
    day         date   NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    visitors    bigint NOT NULL DEFAULT 0,
    events      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day)
);

-- Per (site, UTC day, path): page views.
CREATE TABLE daily_paths (
    site_id     text   NOT NULL,
    day         date   NOT NULL,
    path        text   NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day, path)
);

-- Top paths of a day in index order: `ORDER BY page_views DESC, path LIMIT 3` reads three entries
-- instead of sorting every path of the day. It costs every batch (each page_views update moves an
-- entry), but the base /stats is the contract's read, and its tail latency depends on it
-- (docs/decisions/0002-daily-paths-top-index.md).
CREATE INDEX daily_paths_top ON daily_paths (site_id, day, page_views DESC, path);

-- The set behind daily_stats.visitors: a user's first page view of a (site, day) adds a
-- row here and increments the count; later ones find the row and add nothing.
CREATE TABLE daily_visitor_ids (
    site_id  text NOT NULL,
    day      date NOT NULL,
    user_id  text NOT NULL,
    PRIMARY KEY (site_id, day, user_id)
);

-- Sketches and finer buckets for the richer stats API (ingest/stats_*.py). `hll` is the
-- postgresql-hll extension (Debian: postgresql-<version>-hll; services/postgres.sh installs it).
-- Its sketches count distinct visitors exactly while small (explicit mode) and within about 2%
-- beyond; unions of sketches answer unique visitors over any set of buckets.
CREATE EXTENSION IF NOT EXISTS hll;

-- Per (site, UTC day): a sketch of the visitors among page views (daily_visitor_ids is the exact set).
CREATE TABLE daily_visitors (
    site_id   text NOT NULL,
    day       date NOT NULL,
    visitors  hll  NOT NULL,
    PRIMARY KEY (site_id, day)
);

-- Per (site, 15-minute UTC bucket): page views, all events, a sketch of page-view visitors.
-- Every time zone in use today has an offset that is a multiple of 15 minutes (+05:30,
-- +05:45, +08:45, -03:30), so local days and hours are exact unions of these buckets.
CREATE TABLE quarter_hour_stats (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    page_views  bigint      NOT NULL DEFAULT 0,
    events      bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, bucket)
);

-- Per (site, UTC hour): page views, all events, a sketch of page-view visitors. Hourly
-- timeseries in zones whose offsets are whole hours read 24 rows a day here, not 96.
CREATE TABLE hourly_stats (
    site_id     text        NOT NULL,
    hour        timestamptz NOT NULL,
    page_views  bigint      NOT NULL DEFAULT 0,
    events      bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL DEFAULT hll_empty(),
    PRIMARY KEY (site_id, hour)
);
-- Per (site, 15-minute UTC bucket, path): page views and a sketch of their visitors. The top
-- pages of a range that is not whole UTC days (a local day in another zone: the dashboard's
-- and /stats?timezone=…'s question) read the two partial days here instead of raw events.
-- Page views only, no event type: half the rows of a per-(type, path) table, so each batch
-- can afford it.
CREATE TABLE quarter_hour_paths (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    path        text        NOT NULL,
    page_views  bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    -- page_views in the key: an edge's ranking reads the index alone (decision 34).
    PRIMARY KEY (site_id, bucket, path) INCLUDE (page_views)
);

-- Per (site, UTC hour, path): page views and a sketch of their visitors. The edges of a range
-- in another zone read their whole UTC hours here and only the 15-minute remainders from
-- quarter_hour_paths: a quarter of the rows to rank, and of the sketches to merge per page.
CREATE TABLE hourly_paths (
    site_id     text        NOT NULL,
    hour        timestamptz NOT NULL,
    path        text        NOT NULL,
    page_views  bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, hour, path) INCLUDE (page_views)
);

-- Per (site, 15-minute UTC bucket, event type other than page_view): events and a sketch of
-- their visitors. Event-type breakdowns and filters over a range that is not whole UTC days
-- (a local day in another zone) read the two partial days here instead of raw events;
-- quarter_hour_stats holds the page views. Custom events only: a few rows per bucket.
CREATE TABLE quarter_hour_event_types (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    event_type  text        NOT NULL CHECK (event_type <> 'page_view'),
    events      bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, bucket, event_type)
);

-- The same per path. A kept path is probed per (bucket, path) over the partial days
-- (ingest/stats_sources.py, listed_buckets); other reads are bounded by the edges' buckets.
CREATE TABLE quarter_hour_event_paths (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    path        text        NOT NULL,
    event_type  text        NOT NULL CHECK (event_type <> 'page_view'),
    events      bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, bucket, path, event_type)
);

-- Per (site, UTC day, event type, path): events and a sketch of their visitors, for filters and
-- breakdowns by event type or path.
CREATE TABLE daily_details (
    site_id     text   NOT NULL,
    day         date   NOT NULL,
    event_type  text   NOT NULL,
    path        text   NOT NULL,
    events      bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, day, event_type, path)
);

-- Per (site, UTC month, path): page views. A month's top paths rank one row per path instead
-- of one per path and day; the visitors of the ranked page come from daily_details.
CREATE TABLE monthly_paths (
    site_id     text   NOT NULL,
    month       date   NOT NULL,  -- first day of the UTC month
    path        text   NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, month, path)
);
-- Per (site, UTC day, event type): events and a sketch of their visitors. Event-type
-- breakdowns and filters read a few rows a day here instead of one per path.
CREATE TABLE daily_event_types (
    site_id     text   NOT NULL,
    day         date   NOT NULL,
    event_type  text   NOT NULL,
    events      bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, day, event_type)
);

-- Per (site, 15-minute UTC bucket, dimension, value): the same as daily_dimensions, for the
-- partial UTC days at the edges of a range in a zone whose midnights are not UTC's: a context
-- breakdown reads them instead of those hours' raw events.
CREATE TABLE quarter_hour_dimensions (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    dimension   text        NOT NULL,
    value       text        NOT NULL,
    page_views  bigint      NOT NULL DEFAULT 0,
    events      bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, bucket, dimension, value)
);

-- Per (site, UTC day, dimension, value): page views, events and a sketch of the page-view
-- visitors, for breakdowns and filters by browser, os, device and country
-- (consumer/rollups/dimensions.sql). A missing value is '(not set)'.
CREATE TABLE daily_dimensions (
    site_id     text   NOT NULL,
    day         date   NOT NULL,
    dimension   text   NOT NULL,
    value       text   NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    events      bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, day, dimension, value)
);

-- Per (site, pair of dimensions, UTC day, value of each): page views, events and a sketch of
-- the page-view visitors, for each of the six pairs of browser, os, device and country (in
-- that order: dimension_a first), so that a breakdown by one filtered on another reads rollup
-- rows (consumer/rollups/dimension_pairs.sql). A missing value is '(not set)'.
CREATE TABLE daily_dimension_pairs (
    site_id      text   NOT NULL,
    dimension_a  text   NOT NULL,
    dimension_b  text   NOT NULL,
    day          date   NOT NULL,
    value_a      text   NOT NULL,
    value_b      text   NOT NULL,
    page_views   bigint NOT NULL DEFAULT 0,
    events       bigint NOT NULL DEFAULT 0,
    visitors     hll    NOT NULL,
    PRIMARY KEY (site_id, dimension_a, dimension_b, day, value_a, value_b)
);

-- Per (site, UTC day, event type, property key, value): events and a sketch of their
-- visitors, for custom events with their properties. Bounded per (site, day, event type):
-- at most 30 keys, each with at most 100 values and an '(other)' row for the rest of its
-- events (consumer/rollups/dimensions.sql); the primary key's prefixes serve those caps.
CREATE TABLE daily_props (
    site_id     text   NOT NULL,
    day         date   NOT NULL,
    event_type  text   NOT NULL,
    key         text   NOT NULL,
    value       text   NOT NULL,
    events      bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, day, event_type, key, value)
);

-- Visits (sessions), built by the consumer that owns a site's partition: a visit ends after a
-- gap without events from its visitor (30 minutes by default).
CREATE TABLE visits (
    site_id          text        NOT NULL,
    visitor          text        NOT NULL,  -- the events' user_id
    started_at       timestamptz NOT NULL,  -- its first event's time
    last_at          timestamptz NOT NULL,  -- its last event's time
    day              date        NOT NULL,  -- UTC day of started_at: where the visit counts
    entry_page       text        NOT NULL,  -- path of its first event
    exit_page        text        NOT NULL,  -- path of its last event
    -- From its first event: where the visit came from, on what, from where.
    referrer_host    text,
    referrer_source  text,
    utm_source       text,
    utm_medium       text,
    utm_campaign     text,
    utm_content      text,
    utm_term         text,
    browser          text,
    os               text,
    device           text,
    country          text,
    page_views       integer     NOT NULL,
    events           integer     NOT NULL,
    -- The 15-minute UTC bucket of last_at, written with it by the consumer (and by the
    -- trigger below for any other writer): the realtime count's key. Unlike last_at it
    -- rarely changes when a batch extends the visit, so that update rewrites the row in its
    -- page without new index entries (a HOT update; hence the room left on each page). NULL
    -- for visits last written before migration 0018 and not active then.
    last_bucket      timestamptz,
    PRIMARY KEY (site_id, visitor, started_at)
) WITH (fillfactor = 80);
-- Visitors active now (the realtime count); a site's visits started in a span of UTC days
-- (the partial days of a range outside UTC), and retention by day.
CREATE INDEX visits_active ON visits (site_id, last_bucket) WHERE last_bucket IS NOT NULL;
CREATE INDEX visits_by_day_and_site ON visits (day, site_id, started_at);
-- Keeps last_bucket right whoever writes the row; called only when it is missing or stale.
CREATE FUNCTION visits_last_bucket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_bucket := date_bin('15 minutes', NEW.last_at, timestamptz '2000-01-01 00:00+00');
    RETURN NEW;
END
$$;
CREATE TRIGGER visits_last_bucket BEFORE INSERT OR UPDATE ON visits FOR EACH ROW
    WHEN (NEW.last_bucket IS DISTINCT FROM
          date_bin('15 minutes', NEW.last_at, timestamptz '2000-01-01 00:00+00'))
    EXECUTE FUNCTION visits_last_bucket();

-- A visit's value of each of its thirteen dimensions (NULL when missing), as the visit
-- dimension rollups file it: for the statements that count them from stored visits.
CREATE FUNCTION visit_dimension_values(v visits) RETURNS TABLE (dimension text, value text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    VALUES ('source', coalesce(v.referrer_source, v.referrer_host)), ('referrer', v.referrer_host),
           ('utm_source', v.utm_source), ('utm_medium', v.utm_medium),
           ('utm_campaign', v.utm_campaign), ('utm_content', v.utm_content),
           ('utm_term', v.utm_term), ('entry_page', v.entry_page), ('exit_page', v.exit_page),
           ('browser', v.browser), ('os', v.os), ('device', v.device), ('country', v.country)
$$;

-- The visit rollups' rows are rewritten by nearly every batch (a visit extended changes its
-- bucket's sums): room is left on each page for the new versions (fillfactor), so that most
-- stay in their page without new index entries.

-- Per (site, 15-minute UTC bucket of a visit's start): visits, bounces (visits of exactly
-- one event, a page view), the sum of their durations in whole seconds, and their page views.
-- Local days and hours of every zone in use are unions of these buckets.
CREATE TABLE quarter_hour_visits (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    visits      bigint      NOT NULL DEFAULT 0,
    bounces     bigint      NOT NULL DEFAULT 0,
    duration    bigint      NOT NULL DEFAULT 0,
    page_views  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, bucket)
) WITH (fillfactor = 70);

-- Per (site, visit dimension, 15-minute UTC bucket of a visit's start, value): the same as
-- daily_visit_dimensions, for the partial UTC days at the edges of a range in a zone whose
-- midnights are not UTC's, and for series of one filtered value: a visit breakdown reads them
-- instead of those hours' visits. Keyed by dimension before bucket: an edge reads one range.
CREATE TABLE quarter_hour_visit_dimensions (
    site_id     text        NOT NULL,
    dimension   text        NOT NULL,
    bucket      timestamptz NOT NULL,
    value       text        NOT NULL,
    visits      bigint      NOT NULL DEFAULT 0,
    bounces     bigint      NOT NULL DEFAULT 0,
    duration    bigint      NOT NULL DEFAULT 0,
    page_views  bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, dimension, bucket, value)
) WITH (fillfactor = 70);

-- Per (site, UTC day of a visit's start, visit dimension, value): the same sums and a sketch
-- of the visitors. Dimensions: source, referrer, utm_source, utm_medium, utm_campaign,
-- utm_content, utm_term, entry_page, exit_page, browser, os, device, country. A missing
-- value is '(not set)'.
CREATE TABLE daily_visit_dimensions (
    site_id     text   NOT NULL,
    day         date   NOT NULL,
    dimension   text   NOT NULL,
    value       text   NOT NULL,
    visits      bigint NOT NULL DEFAULT 0,
    bounces     bigint NOT NULL DEFAULT 0,
    duration    bigint NOT NULL DEFAULT 0,
    page_views  bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, day, dimension, value)
) WITH (fillfactor = 70);

-- Visitors of the values on a breakdown page (`path = ANY(...)` over a range of days) without
-- reading every path of every day.
CREATE INDEX daily_details_by_path ON daily_details (site_id, path, day);

-- Time zones a site is read in (its dashboard's zone), set by operators with
-- `python -m consumer.zones add SITE ZONE`. For each, the consumer also keeps the local_*
-- rollups below, keyed by that zone's local days: a range of whole local days then reads
-- day rows, as UTC ranges do, instead of 15-minute rows and raw events. Sites without a row
-- here cost the consumer nothing more. Rows are added and removed together with their
-- rollups, in one transaction (consumer/zones.py), so a reader that finds the row here
-- finds complete local rollups in the same snapshot.
CREATE TABLE site_zones (
    site_id   text        NOT NULL,
    timezone  text        NOT NULL,  -- IANA name, as requests spell it
    added_at  timestamptz NOT NULL DEFAULT now(),
    -- Kept because stats requests asked for the zone (consumer/zone_requests.py), and dropped
    -- again when they stop; operators' zones stay until removed.
    auto      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (site_id, timezone)
);

-- The zones other than UTC that a site's stats are read in: requests counted by the API and
-- written once a minute per API process (ingest/zone_requests.py). The consumers keep the
-- zones asked for (AUTO_ZONES_PER_SITE), drop those nobody asks for any more, and never keep
-- a `declined` one: removed by an operator, or not a zone that can be kept (the reason).
CREATE TABLE zone_requests (
    site_id             text        NOT NULL,
    timezone            text        NOT NULL,
    requests            bigint      NOT NULL DEFAULT 0,
    first_requested_at  timestamptz NOT NULL DEFAULT now(),
    last_requested_at   timestamptz NOT NULL DEFAULT now(),
    declined            text,
    PRIMARY KEY (site_id, timezone)
);

-- Per (site, zone, local day): page views, all events, a sketch of page-view visitors.
CREATE TABLE local_daily_stats (
    site_id     text NOT NULL,
    timezone    text NOT NULL,
    day         date NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    events      bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, timezone, day)
);

-- Per (site, zone, local day, path): page views and a sketch of their visitors.
CREATE TABLE local_daily_paths (
    site_id     text   NOT NULL,
    timezone    text   NOT NULL,
    day         date   NOT NULL,
    path        text   NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, timezone, day, path)
);
-- A local day's top paths in index order (the zone's `/stats?timezone=…`), as daily_paths_top.
CREATE INDEX local_daily_paths_top
    ON local_daily_paths (site_id, timezone, day, page_views DESC, path);
-- Visitors of a breakdown page's paths over a range without reading every path of every day.
CREATE INDEX local_daily_paths_by_path
    ON local_daily_paths (site_id, timezone, path, day);

-- Per (site, zone, local month, path): page views, to rank a month's paths from one row each.
CREATE TABLE local_monthly_paths (
    site_id     text   NOT NULL,
    timezone    text   NOT NULL,
    month       date   NOT NULL,  -- first day of the local month
    path        text   NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, timezone, month, path)
);

-- Per (site, zone, month, path): page views and a sketch of their visitors on the month's days
-- before the watermark below ("sealed" days), in UTC (zone 'UTC', from daily_details) and in
-- each kept zone (from local_daily_paths). A month's visitors per page then merge one sketch
-- instead of one per day (a month's top pages would merge hundreds), and a sealed month's top
-- pages are its first rows in sealed_monthly_paths_top. Batches cannot afford to keep monthly
-- sketches (docs/decisions/0003-no-monthly-sketch-per-batch.md), so `consumer/seal.py` folds
-- closed days in, once, and a batch adds
-- only its rare late events for sealed days. Readers take days before the watermark from here
-- and later days from the daily rows, in one snapshot.
CREATE TABLE sealed_monthly_paths (
    site_id     text   NOT NULL,
    timezone    text   NOT NULL,  -- 'UTC', or a kept zone (site_zones)
    month       date   NOT NULL,  -- first day of the month in that zone
    path        text   NOT NULL,
    page_views  bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    -- Path before month: readers look up a page's few paths over a range of months.
    PRIMARY KEY (site_id, timezone, path, month)
);
CREATE INDEX sealed_monthly_paths_top
    ON sealed_monthly_paths (site_id, timezone, month, page_views DESC, path);

-- Per (site, UTC month, event type): events and a sketch of their visitors on the month's
-- sealed days, for event-type breakdowns and filters over whole months (90 sketches merged a
-- month otherwise). Filled like sealed_monthly_paths, from daily_event_types.
CREATE TABLE sealed_monthly_event_types (
    site_id     text   NOT NULL,
    month       date   NOT NULL,  -- first day of the UTC month
    event_type  text   NOT NULL,
    events      bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    PRIMARY KEY (site_id, month, event_type)
);

-- Per (site, visit dimension, UTC month, value): daily_visit_dimensions of the month's sealed
-- days, summed, the visitors' sketches merged, so that a visit breakdown of a whole month
-- reads one row per value (a month of entry pages: 30 rows and 30 sketches per page
-- otherwise). Sealed with the other months; the visit statement adds its late deltas.
CREATE TABLE sealed_monthly_visit_dimensions (
    site_id     text   NOT NULL,
    dimension   text   NOT NULL,
    month       date   NOT NULL,  -- first day of the UTC month
    value       text   NOT NULL,
    visits      bigint NOT NULL DEFAULT 0,
    bounces     bigint NOT NULL DEFAULT 0,
    duration    bigint NOT NULL DEFAULT 0,
    page_views  bigint NOT NULL DEFAULT 0,
    visitors    hll    NOT NULL,
    -- Value before month: the sketch of a value shown is one descent whatever the months,
    -- and no plan of the statement can walk a month's values for each (a generic plan of a
    -- prepared statement did, with a (site, dimension, month) index beside it).
    PRIMARY KEY (site_id, dimension, value, month)
);

-- One row: days before `sealed_before` (UTC days, and local days in every kept zone) are in
-- sealed_monthly_paths, sealed_monthly_event_types and sealed_monthly_visit_dimensions.
-- '-infinity' until the first seal.
CREATE TABLE sealed_days (
    one            boolean PRIMARY KEY DEFAULT true CHECK (one),
    sealed_before  date    NOT NULL
);
INSERT INTO sealed_days (sealed_before) VALUES ('-infinity');

-- What the stats API keys the answers it keeps by (ingest/stats_answers.py), so that an
-- answer is computed again only when what it reads may have changed:
-- - site_versions: per site, bumped by each consumer batch that stores events of the site, in
--   the batch's transaction (consumer/rollups/batch.sql); a site without a row is at 0.
--   `stamped` is the last version whose batch stamped its days (below); a batch of a consumer
--   before migration 0020 bumps `version` only, and the next one that stamps moves that
--   version into `unstamped`, which keys every later answer of the site;
-- - site_day_versions: per (site, UTC day), the site's version of the last batch that changed
--   what the stats read of that day (its events' days, the start days of the visits it
--   changed): an answer is keyed by the largest over the UTC days its range touches; a day
--   without a row is at 0;
-- - data_epoch: one row, bumped as the last statement of every other transaction that
--   changes what the stats read (seal, zones, rebuild, retention, imports:
--   consumer/data_epoch.py). Last, so that no transaction holding it waits for another lock.
CREATE TABLE site_versions (
    site_id    text   PRIMARY KEY,
    version    bigint NOT NULL,
    stamped    bigint NOT NULL DEFAULT 0,
    unstamped  bigint NOT NULL DEFAULT 0
);

CREATE TABLE site_day_versions (
    site_id  text   NOT NULL,
    day      date   NOT NULL,
    version  bigint NOT NULL,
    PRIMARY KEY (site_id, day)
);

CREATE TABLE data_epoch (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch     bigint  NOT NULL
);
INSERT INTO data_epoch (epoch) VALUES (0);

-- Where each consumer group is in each partition: the offset of the next record to write.
-- Advanced in the same transaction as the rows it covers, with a compare-and-set on the
-- previous value, so a replica that lost a partition cannot write over its new owner.
CREATE TABLE consumer_offsets (
    group_id     text    NOT NULL,
    topic        text    NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint  NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- The browser route's daily visitor salts (ingest/salts.py): one row per UTC day, the random
-- salt sealed with AES-256-GCM under the API's VISITOR_KEY, the day as associated data. The
-- clear salt is never stored; rows older than yesterday are deleted by the API.
CREATE TABLE visitor_salts (
    day              date        PRIMARY KEY,
    sealed           bytea       NOT NULL,
    -- HMAC-SHA256 of a constant under the VISITOR_KEY that sealed the row: a replica with
    -- another key sees it differs and never inserts a salt (ingest/salts.py).
    key_fingerprint  bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Imported history: rows of Plausible CSV exports (`python -m consumer.imports`), one table per
-- CSV file of the export, kept apart from the native rollups so an import can be listed and
-- removed again; the stats API adds them to the native answer (ingest/stats_imported.py) and
-- exports include them (ingest/export.py). Columns are named as in the CSV files; `day` is
-- the CSV's `date`. Text values follow the native rollups' conventions: a value the CSV
-- leaves empty is '(not set)', devices are lower case (docs/api.md, "Export and import").
--
-- A day of a site holds the rows of one import at most: an import first deletes what earlier
-- imports of the site hold for the days of its range, so importing the same export twice
-- replaces it. The primary keys (site, day, the file's dimensions) enforce it.

-- One row per import: its site, the days its file names cover, where it came from.
CREATE TABLE imports (
    import_id    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id      text        NOT NULL,
    first_day    date        NOT NULL,
    last_day     date        NOT NULL,
    source       text        NOT NULL,  -- the file or directory name given to the command
    digest       text        NOT NULL,  -- SHA-256 of its CSV files, in name order
    imported_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imports_by_site ON imports (site_id, first_day);

CREATE TABLE imported_visitors (
    site_id         text   NOT NULL,
    day             date   NOT NULL,
    import_id       bigint NOT NULL,
    visitors        bigint NOT NULL,
    pageviews       bigint NOT NULL,
    bounces         bigint NOT NULL,
    visits          bigint NOT NULL,
    visit_duration  bigint NOT NULL,  -- the sum of the visits' durations, whole seconds
    PRIMARY KEY (site_id, day)
);

CREATE TABLE imported_sources (
    site_id         text   NOT NULL,
    day             date   NOT NULL,
    source          text   NOT NULL,
    referrer        text   NOT NULL,
    utm_source      text   NOT NULL,
    utm_medium      text   NOT NULL,
    utm_campaign    text   NOT NULL,
    utm_content     text   NOT NULL,
    utm_term        text   NOT NULL,
    import_id       bigint NOT NULL,
    pageviews       bigint NOT NULL,
    visitors        bigint NOT NULL,
    visits          bigint NOT NULL,
    visit_duration  bigint NOT NULL,
    bounces         bigint NOT NULL,
    PRIMARY KEY (site_id, day, source, referrer, utm_source, utm_medium, utm_campaign,
                 utm_content, utm_term)
);

CREATE TABLE imported_pages (
    site_id    text   NOT NULL,
    day        date   NOT NULL,
    hostname   text   NOT NULL,
    page       text   NOT NULL,
    import_id  bigint NOT NULL,
    visits     bigint NOT NULL,
    visitors   bigint NOT NULL,
    pageviews  bigint NOT NULL,
    PRIMARY KEY (site_id, day, hostname, page)
);

CREATE TABLE imported_entry_pages (
    site_id         text   NOT NULL,
    day             date   NOT NULL,
    entry_page      text   NOT NULL,
    import_id       bigint NOT NULL,
    visitors        bigint NOT NULL,
    entrances       bigint NOT NULL,  -- visits that started on the page
    visit_duration  bigint NOT NULL,
    bounces         bigint NOT NULL,
    pageviews       bigint NOT NULL,
    PRIMARY KEY (site_id, day, entry_page)
);

CREATE TABLE imported_exit_pages (
    site_id         text   NOT NULL,
    day             date   NOT NULL,
    exit_page       text   NOT NULL,
    import_id       bigint NOT NULL,
    visitors        bigint NOT NULL,
    visit_duration  bigint NOT NULL,
    exits           bigint NOT NULL,  -- visits that ended on the page
    bounces         bigint NOT NULL,
    pageviews       bigint NOT NULL,
    PRIMARY KEY (site_id, day, exit_page)
);

CREATE TABLE imported_custom_events (
    site_id    text   NOT NULL,
    day        date   NOT NULL,
    name       text   NOT NULL,
    link_url   text   NOT NULL,
    path       text   NOT NULL,
    import_id  bigint NOT NULL,
    visitors   bigint NOT NULL,
    events     bigint NOT NULL,
    PRIMARY KEY (site_id, day, name, link_url, path)
);

CREATE TABLE imported_locations (
    site_id         text   NOT NULL,
    day             date   NOT NULL,
    country         text   NOT NULL,
    region          text   NOT NULL,
    city            bigint NOT NULL,  -- a GeoNames id, 0 for none
    import_id       bigint NOT NULL,
    visitors        bigint NOT NULL,
    visits          bigint NOT NULL,
    visit_duration  bigint NOT NULL,
    bounces         bigint NOT NULL,
    pageviews       bigint NOT NULL,
    PRIMARY KEY (site_id, day, country, region, city)
);

CREATE TABLE imported_devices (
    site_id         text   NOT NULL,
    day             date   NOT NULL,
    device          text   NOT NULL,
    import_id       bigint NOT NULL,
    visitors        bigint NOT NULL,
    visits          bigint NOT NULL,
    visit_duration  bigint NOT NULL,
    bounces         bigint NOT NULL,
    pageviews       bigint NOT NULL,
    PRIMARY KEY (site_id, day, device)
);

CREATE TABLE imported_browsers (
    site_id          text   NOT NULL,
    day              date   NOT NULL,
    browser          text   NOT NULL,
    browser_version  text   NOT NULL,
    import_id        bigint NOT NULL,
    visitors         bigint NOT NULL,
    visits           bigint NOT NULL,
    visit_duration   bigint NOT NULL,
    bounces          bigint NOT NULL,
    pageviews        bigint NOT NULL,
    PRIMARY KEY (site_id, day, browser, browser_version)
);

CREATE TABLE imported_operating_systems (
    site_id                   text   NOT NULL,
    day                       date   NOT NULL,
    operating_system          text   NOT NULL,
    operating_system_version  text   NOT NULL,
    import_id                 bigint NOT NULL,
    visitors                  bigint NOT NULL,
    visits                    bigint NOT NULL,
    visit_duration            bigint NOT NULL,
    bounces                   bigint NOT NULL,
    pageviews                 bigint NOT NULL,
    PRIMARY KEY (site_id, day, operating_system, operating_system_version)
);
