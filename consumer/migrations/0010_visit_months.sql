-- 0010: the sealed months of daily_visit_dimensions (consumer/rollups/sealed.sql), so that a
-- visit breakdown of a whole month reads one row per value instead of one per value and day
-- (ingest/stats_visits_page.py; docs/benchmarks.md, "Visit breakdowns (issue 14)").
--
-- Cost: one pass over the daily_visit_dimensions rows of the days already sealed (about
-- 60,000 rows for a 10-million-event month: seconds); a read lock on it, which consumers'
-- upserts do not wait for, and a write lock on the new table only.
--
-- Consumers of the previous release keep working during a rolling upgrade but know nothing
-- of the new table: their seals do not fill it, nor do their batches add the late visit
-- deltas of sealed days to it. Run `python -m consumer.rebuild --from <first day of the
-- upgrade> --to <last>` once the last of them has stopped: it recounts the sealed months of
-- those days.
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

-- A seal holds the sealed months against batches; this takes the same lock on the month
-- tables a seal takes, so no seal moves the watermark between this read and the commit.
LOCK TABLE sealed_monthly_paths, sealed_monthly_event_types IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO sealed_monthly_visit_dimensions
    (site_id, dimension, month, value, visits, bounces, duration, page_views, visitors)
SELECT site_id, dimension, date_trunc('month', day)::date, value, sum(visits), sum(bounces),
       sum(duration), sum(page_views), hll_union_agg(visitors)
FROM daily_visit_dimensions
WHERE day < (SELECT sealed_before FROM sealed_days)
GROUP BY 1, 2, 3, 4;
