-- 0018: a visit extended by a batch can be rewritten in its own page, without new index
-- entries (a HOT update), and the visit rollups' rows likewise
-- (docs/decisions/0035-visits-updated-in-place.md). With 0019, which moves the realtime
-- count's index from last_at, which every extension changes, to the column added here.
--
-- - `visits.last_bucket`: the 15-minute UTC bucket of last_at, written with it by the
--   consumer. A trigger keeps it right for any other writer (a consumer of the previous
--   release, a hand-written fix); it runs only when a row's bucket is missing or stale, so
--   the consumer's own writes never call it.
-- - Free room on every page (fillfactor) for the rewritten rows of `visits` and of the visit
--   rollups, which every batch updates. It applies to pages written from now on.
-- - The visits that may be in a realtime window from now on (an event in the last ten
--   minutes, or dated ahead) get their bucket; every later write of a visit sets it.
--
-- Locks: the visit rollups first (SHARE UPDATE EXCLUSIVE, which batches and questions do not
-- wait for), then `visits` (ACCESS EXCLUSIVE), briefly: a rebuild that holds the rollups and
-- then reads `visits` is waited for rather than deadlocked with.
ALTER TABLE quarter_hour_visits SET (fillfactor = 70);
ALTER TABLE quarter_hour_visit_dimensions SET (fillfactor = 70);
ALTER TABLE daily_visit_dimensions SET (fillfactor = 70);
LOCK TABLE visits IN ACCESS EXCLUSIVE MODE;
ALTER TABLE visits ADD COLUMN last_bucket timestamptz;
ALTER TABLE visits SET (fillfactor = 80);
CREATE FUNCTION visits_last_bucket() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_bucket := date_bin('15 minutes', NEW.last_at, timestamptz '2000-01-01 00:00+00');
    RETURN NEW;
END
$$;
CREATE TRIGGER visits_last_bucket BEFORE INSERT OR UPDATE ON visits FOR EACH ROW
    WHEN (NEW.last_bucket IS DISTINCT FROM
          date_bin('15 minutes', NEW.last_at, timestamptz '2000-01-01 00:00+00'))
    EXECUTE FUNCTION visits_last_bucket();
UPDATE visits SET last_bucket = date_bin('15 minutes', last_at, timestamptz '2000-01-01 00:00+00')
WHERE day >= (now() AT TIME ZONE 'UTC')::date - 2 AND last_at >= now() - interval '10 minutes';
