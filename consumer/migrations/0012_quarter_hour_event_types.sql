-- 0012: events of each type other than page_view per 15-minute UTC bucket, and per path, so
-- that event types, event-type filters and path filters counting events in a zone whose
-- midnights are not UTC's read rollup rows for the partial UTC days at the edges of their
-- range instead of raw events
-- (consumer/rollups/stats_api.sql, docs/decisions/0028-quarter-hour-event-types.md).
--
-- Cost: the new tables are filled from the raw events of every day still stored, one pass over
-- the events that are not page views, under a SHARE lock on `events`: batches in flight finish
-- first, and consumers' next batches wait (and retry) until the migration commits, so that no
-- batch committed during the fill is left out of it. Days dropped by retention have no raw events left and get no rows: their edges
-- read raw events before, and found none either.
--
-- Consumers of the previous release keep working during a rolling upgrade but do not know
-- these rollups: the events they store after the migration are missing from it until
-- `python -m consumer.rebuild --from <first day of the upgrade> --to <last>` recounts those
-- days once the last of them has stopped.
LOCK TABLE events IN SHARE MODE;

CREATE TABLE quarter_hour_event_types (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    event_type  text        NOT NULL CHECK (event_type <> 'page_view'),
    events      bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, bucket, event_type)
);

INSERT INTO quarter_hour_event_types (site_id, bucket, event_type, events, visitors)
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'),
       event_type, count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE event_type <> 'page_view'
GROUP BY 1, 2, 3;

CREATE TABLE quarter_hour_event_paths (
    site_id     text        NOT NULL,
    bucket      timestamptz NOT NULL,
    path        text        NOT NULL,
    event_type  text        NOT NULL CHECK (event_type <> 'page_view'),
    events      bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, bucket, path, event_type)
);

INSERT INTO quarter_hour_event_paths (site_id, bucket, path, event_type, events, visitors)
SELECT site_id, date_bin('15 minutes', event_time, timestamptz '2000-01-01 00:00+00'), path,
       event_type, count(*), hll_add_agg(hll_hash_text(user_id))
FROM events
WHERE event_type <> 'page_view'
GROUP BY 1, 2, 3, 4;
