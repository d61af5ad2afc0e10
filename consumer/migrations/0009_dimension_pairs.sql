-- 0009: each event's context by pairs of dimensions (browser, OS, device, country) per UTC
-- day, so that a breakdown by one filtered on another reads rollup rows instead of the raw
-- events of its range (consumer/rollups/dimension_pairs.sql,
-- docs/decisions/0023-dimension-pairs.md).
--
-- Cost: the new table is filled from the raw events of every day still stored, one pass over
-- `events` grouped by site, day and the four values (about a minute per 10 million events; a
-- read lock on `events`, which consumers' inserts do not wait for). Days dropped by retention
-- have no raw events left and get no rows: a filtered breakdown over them found nothing in
-- raw events before either.
--
-- Consumers of the previous release keep working during a rolling upgrade but do not know
-- this rollup: the events they store after the migration are missing from it until
-- `python -m consumer.rebuild --from <first day of the upgrade> --to <last>` recounts those
-- days once the last of them has stopped.
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

INSERT INTO daily_dimension_pairs
    (site_id, dimension_a, dimension_b, day, value_a, value_b, page_views, events, visitors)
SELECT c.site_id, p.dimension_a, p.dimension_b, c.day, p.value_a, p.value_b,
       sum(c.page_views), sum(c.events), coalesce(hll_union_agg(c.visitors), hll_empty())
FROM (
    SELECT site_id, day, coalesce(browser, '(not set)') AS browser,
           coalesce(os, '(not set)') AS os, coalesce(device, '(not set)') AS device,
           coalesce(country, '(not set)') AS country,
           count(*) FILTER (WHERE event_type = 'page_view') AS page_views, count(*) AS events,
           hll_add_agg(hll_hash_text(user_id)) FILTER (WHERE event_type = 'page_view')
               AS visitors
    FROM events
    GROUP BY 1, 2, 3, 4, 5, 6
) AS c
CROSS JOIN LATERAL (VALUES
    ('browser', c.browser, 'os', c.os), ('browser', c.browser, 'device', c.device),
    ('browser', c.browser, 'country', c.country), ('os', c.os, 'device', c.device),
    ('os', c.os, 'country', c.country), ('device', c.device, 'country', c.country)
) AS p (dimension_a, value_a, dimension_b, value_b)
GROUP BY 1, 2, 3, 4, 5, 6;
