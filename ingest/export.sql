-- The files of an export (ingest/export.py), one statement each, in the columns and order of
-- core/plausible_csv.py: native rollups of the site's UTC days [first, last] plus the rows
-- imported for those days (consumer/imports.py), summed per day and key. Inner selects keep
-- the rollups' conventions ('(not set)' for a missing value); the outer one writes them as the
-- CSV does (empty). Visitors of a day and value come from its sketch (exact while small,
-- within about 2% beyond), or the exact daily count where there is one (imported_visitors).
-- Rows are ordered by day and key, byte-wise, so the same data gives the same file.
-- Parameters: site, first, last (dates) and start, end (the UTC instants of first and last+1).

-- name: imported_visitors
SELECT day, sum(visitors)::bigint, sum(pageviews)::bigint, sum(bounces)::bigint,
       sum(visits)::bigint, sum(visit_duration)::bigint
FROM (
    SELECT day, visitors, page_views AS pageviews, 0 AS bounces, 0 AS visits,
           0 AS visit_duration
    FROM daily_stats
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
    UNION ALL
    SELECT (bucket AT TIME ZONE 'UTC')::date, 0, 0, bounces, visits, duration
    FROM quarter_hour_visits
    WHERE site_id = %(site)s AND bucket >= %(start)s AND bucket < %(end)s
    UNION ALL
    SELECT day, visitors, pageviews, bounces, visits, visit_duration
    FROM imported_visitors
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day ORDER BY day

-- name: imported_sources
-- Combinations of source, referrer and UTM values per visit: the visit rollups keep each
-- dimension apart, so this file reads the visits themselves.
SELECT day, nullif(source, '(not set)'), nullif(referrer, '(not set)'),
       nullif(utm_source, '(not set)'), nullif(utm_medium, '(not set)'),
       nullif(utm_campaign, '(not set)'), nullif(utm_content, '(not set)'),
       nullif(utm_term, '(not set)'),
       sum(pageviews)::bigint, sum(visitors)::bigint, sum(visits)::bigint,
       sum(visit_duration)::bigint, sum(bounces)::bigint
FROM (
    SELECT day, coalesce(referrer_source, referrer_host, '(not set)') AS source,
           coalesce(referrer_host, '(not set)') AS referrer,
           coalesce(utm_source, '(not set)') AS utm_source,
           coalesce(utm_medium, '(not set)') AS utm_medium,
           coalesce(utm_campaign, '(not set)') AS utm_campaign,
           coalesce(utm_content, '(not set)') AS utm_content,
           coalesce(utm_term, '(not set)') AS utm_term,
           sum(page_views) AS pageviews, count(DISTINCT visitor) AS visitors,
           count(*) AS visits,
           sum(floor(extract(epoch FROM last_at - started_at))) AS visit_duration,
           count(*) FILTER (WHERE events = 1 AND page_views = 1) AS bounces
    FROM visits
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    UNION ALL
    SELECT day, source, referrer, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
           pageviews, visitors, visits, visit_duration, bounces
    FROM imported_sources
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, source, referrer, utm_source, utm_medium, utm_campaign, utm_content, utm_term
ORDER BY day, source COLLATE "C", referrer COLLATE "C", utm_source COLLATE "C",
         utm_medium COLLATE "C", utm_campaign COLLATE "C", utm_content COLLATE "C",
         utm_term COLLATE "C"

-- name: imported_pages
-- No hostname is stored, and no visit per page: `visits` is the page's visitors, a lower
-- bound (exact when each visitor came once that day). Scroll depth is not measured (0).
SELECT day, nullif(hostname, '(not set)'), nullif(page, '(not set)'), sum(visits)::bigint,
       sum(visitors)::bigint, sum(pageviews)::bigint, 0, 0
FROM (
    SELECT day, '(not set)' AS hostname, path AS page,
           round(hll_cardinality(visitors)) AS visits,
           round(hll_cardinality(visitors)) AS visitors, events AS pageviews
    FROM daily_details
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND event_type = 'page_view'
    UNION ALL
    SELECT day, hostname, page, visits, visitors, pageviews
    FROM imported_pages
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, hostname, page ORDER BY day, hostname COLLATE "C", page COLLATE "C"

-- name: imported_entry_pages
SELECT day, nullif(entry_page, '(not set)'), sum(visitors)::bigint, sum(entrances)::bigint,
       sum(visit_duration)::bigint, sum(bounces)::bigint, sum(pageviews)::bigint
FROM (
    SELECT day, value AS entry_page, round(hll_cardinality(visitors)) AS visitors,
           visits AS entrances, duration AS visit_duration, bounces, page_views AS pageviews
    FROM daily_visit_dimensions
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND dimension = 'entry_page'
    UNION ALL
    SELECT day, entry_page, visitors, entrances, visit_duration, bounces, pageviews
    FROM imported_entry_pages
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, entry_page ORDER BY day, entry_page COLLATE "C"

-- name: imported_exit_pages
SELECT day, nullif(exit_page, '(not set)'), sum(visitors)::bigint,
       sum(visit_duration)::bigint, sum(exits)::bigint, sum(bounces)::bigint,
       sum(pageviews)::bigint
FROM (
    SELECT day, value AS exit_page, round(hll_cardinality(visitors)) AS visitors,
           duration AS visit_duration, visits AS exits, bounces, page_views AS pageviews
    FROM daily_visit_dimensions
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND dimension = 'exit_page'
    UNION ALL
    SELECT day, exit_page, visitors, visit_duration, exits, bounces, pageviews
    FROM imported_exit_pages
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, exit_page ORDER BY day, exit_page COLLATE "C"

-- name: imported_custom_events
SELECT day, nullif(name, '(not set)'), nullif(link_url, '(not set)'),
       nullif(path, '(not set)'), sum(visitors)::bigint, sum(events)::bigint
FROM (
    SELECT day, event_type AS name, '(not set)' AS link_url, '(not set)' AS path,
           round(hll_cardinality(visitors)) AS visitors, events
    FROM daily_event_types
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND event_type <> 'page_view'
    UNION ALL
    SELECT day, name, link_url, path, visitors, events
    FROM imported_custom_events
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, name, link_url, path
ORDER BY day, name COLLATE "C", link_url COLLATE "C", path COLLATE "C"

-- name: imported_locations
-- Countries only (no region or city is kept); visits of an unknown country are left out, as
-- Plausible's exporter does.
SELECT day, nullif(country, '(not set)'), nullif(region, '(not set)'), city,
       sum(visitors)::bigint, sum(visits)::bigint, sum(visit_duration)::bigint,
       sum(bounces)::bigint, sum(pageviews)::bigint
FROM (
    SELECT day, value AS country, '(not set)' AS region, 0::bigint AS city,
           round(hll_cardinality(visitors)) AS visitors, visits, duration AS visit_duration,
           bounces, page_views AS pageviews
    FROM daily_visit_dimensions
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND dimension = 'country' AND value <> '(not set)'
    UNION ALL
    SELECT day, country, region, city, visitors, visits, visit_duration, bounces, pageviews
    FROM imported_locations
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, country, region, city
ORDER BY day, country COLLATE "C", region COLLATE "C", city

-- name: imported_devices
-- Plausible names devices with a capital ("Desktop"); the rollups keep them lower case.
SELECT day, CASE WHEN device = '(not set)' THEN NULL
                 ELSE upper(left(device, 1)) || substr(device, 2) END,
       sum(visitors)::bigint, sum(visits)::bigint, sum(visit_duration)::bigint,
       sum(bounces)::bigint, sum(pageviews)::bigint
FROM (
    SELECT day, value AS device, round(hll_cardinality(visitors)) AS visitors, visits,
           duration AS visit_duration, bounces, page_views AS pageviews
    FROM daily_visit_dimensions
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND dimension = 'device'
    UNION ALL
    SELECT day, device, visitors, visits, visit_duration, bounces, pageviews
    FROM imported_devices
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, device ORDER BY day, device COLLATE "C"

-- name: imported_browsers
-- No browser version is kept: empty.
SELECT day, nullif(browser, '(not set)'), nullif(browser_version, '(not set)'),
       sum(visitors)::bigint, sum(visits)::bigint, sum(visit_duration)::bigint,
       sum(bounces)::bigint, sum(pageviews)::bigint
FROM (
    SELECT day, value AS browser, '(not set)' AS browser_version,
           round(hll_cardinality(visitors)) AS visitors, visits, duration AS visit_duration,
           bounces, page_views AS pageviews
    FROM daily_visit_dimensions
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND dimension = 'browser'
    UNION ALL
    SELECT day, browser, browser_version, visitors, visits, visit_duration, bounces,
           pageviews
    FROM imported_browsers
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, browser, browser_version
ORDER BY day, browser COLLATE "C", browser_version COLLATE "C"

-- name: imported_operating_systems
-- No operating system version is kept: empty.
SELECT day, nullif(operating_system, '(not set)'),
       nullif(operating_system_version, '(not set)'), sum(visitors)::bigint,
       sum(visits)::bigint, sum(visit_duration)::bigint, sum(bounces)::bigint,
       sum(pageviews)::bigint
FROM (
    SELECT day, value AS operating_system, '(not set)' AS operating_system_version,
           round(hll_cardinality(visitors)) AS visitors, visits, duration AS visit_duration,
           bounces, page_views AS pageviews
    FROM daily_visit_dimensions
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
      AND dimension = 'os'
    UNION ALL
    SELECT day, operating_system, operating_system_version, visitors, visits,
           visit_duration, bounces, pageviews
    FROM imported_operating_systems
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day, operating_system, operating_system_version
ORDER BY day, operating_system COLLATE "C", operating_system_version COLLATE "C"
