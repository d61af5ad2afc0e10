-- 0008: imported history (Plausible CSV exports), kept apart from native data.
--
-- Cost: new empty tables; no lock on any other. Processes of the previous release never read
-- them.
--
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
