-- 0004: one name per measure in every rollup. A count or sketch of page views is
-- `page_views` (it was `views` in the path tables); a count or sketch of distinct visitors is
-- `visitors` (it was `unique_users` in daily_stats and `users` in the per-event-type tables);
-- the exact set of a day's visitors is `daily_visitor_ids` (it was `daily_users`). Its rows
-- keep `user_id`: that is the wire field a visitor is identified by.
--
-- Cost: renames change the catalog only, no row is rewritten. Each takes an ACCESS EXCLUSIVE
-- lock on its table until this migration commits, a wait bounded by the migration's
-- lock_timeout.
--
-- Processes of the previous release name the old columns, so stop them before migrating
-- (docs/operations.md, Upgrading). One that runs on anyway loses nothing: its consumer's batch
-- fails with SQLSTATE 42703, a database-side error it retries without committing offsets, and
-- its stats API answers 500 until it is replaced. One that starts after this migration
-- fails at start-up, on re-applying its own schema (42703: it indexes `views`), and changes
-- nothing: that schema is applied in one transaction.
ALTER TABLE daily_stats RENAME COLUMN unique_users TO visitors;
ALTER TABLE daily_users RENAME TO daily_visitor_ids;
ALTER INDEX daily_users_pkey RENAME TO daily_visitor_ids_pkey;
ALTER TABLE daily_paths RENAME COLUMN views TO page_views;
ALTER TABLE quarter_hour_paths RENAME COLUMN views TO page_views;
ALTER TABLE monthly_paths RENAME COLUMN views TO page_views;
ALTER TABLE local_daily_paths RENAME COLUMN views TO page_views;
ALTER TABLE local_monthly_paths RENAME COLUMN views TO page_views;
ALTER TABLE sealed_monthly_paths RENAME COLUMN views TO page_views;
ALTER TABLE daily_details RENAME COLUMN users TO visitors;
ALTER TABLE daily_event_types RENAME COLUMN users TO visitors;
ALTER TABLE sealed_monthly_event_types RENAME COLUMN users TO visitors;
