-- 0011: the index on visits' UTC day also holds the site and start, so that a visit breakdown
-- or filter outside UTC reads the visits of its partial UTC days for its own site and span
-- (ingest/stats_visits.py, `_visit_spans`) instead of every site's visits of those days, or of
-- the table: the planner took a parallel scan of all 8M visits of the 10M-event month for
-- Asia/Kolkata's two edges (0.8 s; 0.12–0.15 s with this index). It replaces the index on
-- `day` alone, which retention's deletes by day keep using through its first column, so the
-- consumer's upserts still maintain three indexes on visits.
--
-- Cost: one index build over `visits` (about 10 s for 8M rows), during which batches wait
-- for their visit statement; consumers of the previous release keep working with it.
CREATE INDEX visits_by_day_and_site ON visits (day, site_id, started_at);
DROP INDEX visits_by_day;
