-- 0020: kept stats answers are keyed by the versions of the UTC days they read, not by the
-- whole site's (docs/decisions/0037-answers-by-site-day.md): a batch of today leaves the
-- answers about last month kept.
--
-- - site_day_versions: per (site, UTC day), the site's version (site_versions) of the last
--   batch that changed what the stats read of that day: its events' days, and the start days
--   of the visits it made, extended or moved. Nothing to fill: a day without a row is at 0.
-- - site_versions.stamped: the last version whose batch stamped its days. A batch of a
--   consumer of the previous release bumps `version` only; the API then keys every answer of
--   the site by that version (it cannot know which days the batch wrote), and the next batch
--   of this release moves it into `unstamped`, which every later key of the site includes.
--   Existing rows start at 0: each site's answers are keyed by its whole version until its
--   first batch after the migration.
--
-- Locks: ACCESS EXCLUSIVE on site_versions for the two column additions (no rewrite), which
-- waits for the batches in flight to commit: batches touch it last, after every rollup, so
-- nothing waits the other way. Stats questions read it to key their answers: they queue
-- behind the wait, and those past STATS_LOCK_TIMEOUT_MS answer 503 (docs/operations.md).
ALTER TABLE site_versions
    ADD COLUMN stamped    bigint NOT NULL DEFAULT 0,
    ADD COLUMN unstamped  bigint NOT NULL DEFAULT 0;

CREATE TABLE site_day_versions (
    site_id  text   NOT NULL,
    day      date   NOT NULL,
    version  bigint NOT NULL,
    PRIMARY KEY (site_id, day)
);
