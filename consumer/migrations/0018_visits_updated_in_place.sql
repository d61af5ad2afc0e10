-- 0018: a visit extended by a batch is rewritten in its own page, without new index entries
-- (a HOT update), and the visit rollups' rows likewise
-- (docs/decisions/0035-visits-updated-in-place.md).
--
-- - The realtime count's index on (site_id, last_at) changed with every event that extends a
--   visit, so each such update wrote a new entry in all three indexes of `visits`. It is
--   replaced by one on (site_id, last_bucket): the 15-minute UTC bucket of the visit's last
--   event, which the consumer writes with it and which changes only when a visit's events
--   cross a quarter hour. The count reads the site's visits of the buckets since the window
--   began and keeps those whose last event is in it, as exactly as before.
-- - Free room on every page (fillfactor) for the rewritten rows of `visits` and of the visit
--   rollups, which every batch updates. It applies to pages written from now on.
--
-- Cost: `visits` is locked (ACCESS EXCLUSIVE) while the new column is added, the visits that
-- started since yesterday and had an event in the last hour get their bucket, and the index
-- is built (it reads the whole table): consumers' batches and questions about visits wait.
-- The bench's 10M-event month (8M visits, 1.9 GB, in the OS's page cache) took 1.1 s.
--
-- During a rolling upgrade, consumers of the previous release leave `last_bucket` empty (a
-- visit they start) or stale (one they extend): the realtime count can miss those visits
-- until the last old consumer stops and five minutes pass. API replicas of the previous
-- release count realtime visitors by reading all of a site's visits (the index they used is
-- gone): slow for a large site, answered 503 past the statement timeout, until they are
-- replaced. Nothing else changes for either.
LOCK TABLE visits IN ACCESS EXCLUSIVE MODE;
ALTER TABLE visits ADD COLUMN last_bucket timestamptz;
UPDATE visits SET last_bucket = date_bin('15 minutes', last_at, timestamptz '2000-01-01 00:00+00')
WHERE day >= current_date - 1 AND last_at >= now() - interval '1 hour';
CREATE INDEX visits_active ON visits (site_id, last_bucket) WHERE last_bucket IS NOT NULL;
DROP INDEX visits_recent;
ALTER TABLE visits SET (fillfactor = 80);
ALTER TABLE quarter_hour_visits SET (fillfactor = 70);
ALTER TABLE quarter_hour_visit_dimensions SET (fillfactor = 70);
ALTER TABLE daily_visit_dimensions SET (fillfactor = 70);
