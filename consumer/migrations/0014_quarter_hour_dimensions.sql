-- 0014: each event's context per 15-minute UTC bucket (browser, os, device, country), so that
-- a context breakdown in a zone whose midnights are not UTC's reads rollup rows for the
-- partial UTC days at the edges of its range instead of their raw events
-- (consumer/rollups/dimensions.sql, docs/decisions/0030-quarter-hour-dimensions.md).
--
-- Cost: the new table is filled from the raw events of every day still stored, one pass over
-- `events` under a SHARE lock: batches in flight finish first, and consumers' next batches
-- wait (and retry) until the migration commits, so that none is left out of the fill. Days dropped by retention
-- have no raw events left and get no rows: their edges read raw events before, and found none
-- either.
--
-- Consumers of the previous release keep working during a rolling upgrade but do not know
-- this rollup: the events they store after the migration are missing from it until
-- `python -m consumer.rebuild --from <first day of the upgrade> --to <last>` recounts those
-- days once the last of them has stopped (docs/operations.md, upgrading).
LOCK TABLE events IN SHARE MODE;

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
GROUP BY 1, 2, 3, 4;
