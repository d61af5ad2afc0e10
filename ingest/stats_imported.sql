-- The imported layer of the stats answers (ingest/stats_imported.py): sums of the rows that
-- `python -m consumer.imports` wrote for a site's days [first, last], and the native visit
-- sums that bounce rate, visit duration and views per visit are recomputed from once
-- imported visits join them. Imported days are whole days as the export had them; they are
-- taken as the request's local days.

-- name: import_spans
-- Per site, the days its imports cover (cached by the API for a few seconds).
SELECT site_id, min(first_day), max(last_day) FROM imports GROUP BY site_id

-- name: totals
SELECT coalesce(sum(pageviews), 0), coalesce(sum(visitors), 0),
       coalesce(sum(pageviews), 0) + (
           SELECT coalesce(sum(events), 0) FROM imported_custom_events
           WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s),
       coalesce(sum(visits), 0), coalesce(sum(bounces), 0), coalesce(sum(visit_duration), 0),
       coalesce(sum(pageviews), 0)
FROM imported_visitors
WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s

-- name: series
SELECT day, sum(pageviews), sum(visitors), sum(pageviews) + sum(custom), sum(visits),
       sum(bounces), sum(visit_duration), sum(pageviews)
FROM (
    SELECT day, pageviews, visitors, visits, bounces, visit_duration, 0 AS custom
    FROM imported_visitors
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
    UNION ALL
    SELECT day, 0, 0, 0, 0, 0, events
    FROM imported_custom_events
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY day ORDER BY day

-- name: event_types
-- Page views are the `page_view` event type here; custom events keep their names.
SELECT value, sum(views), sum(visitors), sum(events), sum(visits), sum(bounces),
       sum(duration), sum(visit_views)
FROM (
    SELECT 'page_view' AS value, pageviews AS views, visitors, pageviews AS events,
           0 AS visits, 0 AS bounces, 0 AS duration, 0 AS visit_views
    FROM imported_visitors
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
    UNION ALL
    SELECT name, 0, visitors, events, 0, 0, 0, 0
    FROM imported_custom_events
    WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
) r
GROUP BY value

-- name: native_totals
SELECT coalesce(sum(visits), 0), coalesce(sum(bounces), 0), coalesce(sum(duration), 0),
       coalesce(sum(page_views), 0)
FROM quarter_hour_visits
WHERE site_id = %(site)s AND bucket >= %(start)s AND bucket < %(end)s

-- name: native_series
SELECT (bucket AT TIME ZONE %(timezone)s)::date, sum(visits), sum(bounces), sum(duration),
       sum(page_views)
FROM quarter_hour_visits
WHERE site_id = %(site)s AND bucket >= %(start)s AND bucket < %(end)s
GROUP BY 1

-- name: native_values
SELECT value, sum(visits), sum(bounces), sum(duration), sum(page_views)
FROM daily_visit_dimensions
WHERE site_id = %(site)s AND day BETWEEN %(first)s AND %(last)s
  AND dimension = %(dimension)s AND value = ANY(%(values)s)
GROUP BY value
