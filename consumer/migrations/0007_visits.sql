-- 0007: visits (sessions). The consumer that owns a site's partition groups each visitor's
-- events into visits (a visit ends after a gap without events, 30 minutes by default) and
-- keeps them here in the batch's transaction, with the visit rollups below.
--
-- Cost: new empty tables; no lock on any other. Consumers of the previous release write
-- events but no visits: events they store during a rolling upgrade are in no visit.
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
    PRIMARY KEY (site_id, visitor, started_at)
);
-- Visitors active now (the realtime count), and retention by day.
CREATE INDEX visits_recent ON visits (site_id, last_at);
CREATE INDEX visits_by_day ON visits (day);

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
);

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
);
