-- 0015: each visit's dimensions per 15-minute UTC bucket of its start, so that a visit
-- breakdown in a zone whose midnights are not UTC's reads rollup rows for the partial UTC days
-- at the edges of its range instead of those hours' visits (consumer/rollups/visits.sql,
-- docs/decisions/0031-quarter-hour-visit-dimensions.md).
--
-- Cost: the new table is filled from every stored visit, one pass over `visits` under a SHARE
-- lock: batches in flight finish first, and consumers' next batches wait (and retry) until
-- the migration commits, so that none is left out of the fill. Visits of days dropped by
-- retention are gone and get no rows: their edges read visits before, and found none either.
-- The sketches hold each visit's present values (as a rebuild's do).
--
-- Consumers of the previous release keep working during a rolling upgrade but do not know
-- this rollup: the visits they change after the migration are missing from it until
-- `python -m consumer.rebuild --from <first day of the upgrade> --to <last>` recounts those
-- days once the last of them has stopped (docs/operations.md, upgrading).
LOCK TABLE visits IN SHARE MODE;

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
);

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
GROUP BY 1, 2, 3, 4;
