-- 0006: the daily visitor salts of the browser route (ingest/salts.py). One row per UTC day,
-- its random salt sealed with AES-256-GCM under the API's VISITOR_KEY (the day is the
-- associated data): the clear salt is never in the database. The API inserts today's and
-- tomorrow's rows and deletes those before yesterday. Each row carries the fingerprint of
-- the key that sealed it, so replicas find out they hold different keys before inserting.
--
-- Cost: a new empty table; no lock on any other. Processes of the previous release never
-- read it.
CREATE TABLE visitor_salts (
    day              date        PRIMARY KEY,
    sealed           bytea       NOT NULL,
    -- HMAC-SHA256 of a constant under the VISITOR_KEY that sealed the row: a replica with
    -- another key sees it differs and never inserts a salt (ingest/salts.py).
    key_fingerprint  bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
