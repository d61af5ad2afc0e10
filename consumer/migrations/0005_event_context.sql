-- 0005: each event's context (browser, OS, device, country, referrer, UTM values, custom
-- properties), as nullable columns of `events`, and the daily rollups by those dimensions
-- (consumer/rollups/dimensions.sql).
--
-- Cost: columns without a default change the catalog only, on every partition. Events stored
-- before have no context: daily_dimensions counts each earlier day's totals under
-- '(not set)', copied from daily_stats and daily_visitors (one pass over one row per site and
-- day; those rollups outlive retention), so a breakdown adds up to the totals on every day.
--
-- Consumers of the previous release keep working during a rolling upgrade: their insert
-- names its columns, so the new ones stay NULL for the events they write, and they know no
-- dimension rollup. Events they write carry no context in the stats.
ALTER TABLE events
    ADD COLUMN browser text,
    ADD COLUMN os text,
    ADD COLUMN device text,
    ADD COLUMN country text,
    ADD COLUMN referrer_host text,
    ADD COLUMN referrer_source text,
    ADD COLUMN utm_source text,
    ADD COLUMN utm_medium text,
    ADD COLUMN utm_campaign text,
    ADD COLUMN utm_content text,
    ADD COLUMN utm_term text,
    ADD COLUMN props jsonb;

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

INSERT INTO daily_dimensions (site_id, day, dimension, value, page_views, events, visitors)
SELECT s.site_id, s.day, d.dimension, '(not set)', s.page_views, s.events,
       coalesce(v.visitors, hll_empty())
FROM daily_stats s
LEFT JOIN daily_visitors v USING (site_id, day)
CROSS JOIN (VALUES ('browser'), ('os'), ('device'), ('country')) AS d (dimension);
