-- 0013: page views and their visitors per (site, UTC hour, path), so that the edges of a range
-- in a zone whose midnights are not UTC's read their whole hours here and only the 15-minute
-- remainders from quarter_hour_paths (ingest/stats_plan.py, `_path_edges`;
-- docs/decisions/0029-hourly-paths.md).
--
-- Cost: the new table is filled from quarter_hour_paths, four rows to one (every day that has
-- 15-minute rows, retained or not: they are kept like every rollup), under a SHARE lock on it:
-- consumers' batches wait (and retry) until the migration commits, so none is left out.
--
-- Consumers of the previous release keep working during a rolling upgrade but do not know
-- this rollup: the page views they store after the migration are missing from it until
-- `python -m consumer.rebuild --from <first day of the upgrade> --to <last>` recounts those
-- days once the last of them has stopped.
LOCK TABLE quarter_hour_paths IN SHARE MODE;

CREATE TABLE hourly_paths (
    site_id     text        NOT NULL,
    hour        timestamptz NOT NULL,
    path        text        NOT NULL,
    page_views  bigint      NOT NULL DEFAULT 0,
    visitors    hll         NOT NULL,
    PRIMARY KEY (site_id, hour, path)
);

INSERT INTO hourly_paths (site_id, hour, path, page_views, visitors)
SELECT site_id, date_trunc('hour', bucket, 'UTC'), path,
       sum(page_views), hll_union_agg(visitors)
FROM quarter_hour_paths
GROUP BY 1, 2, 3;
