-- 0006: the daily visitor salts of the browser route (ingest/salts.py). One row per UTC day,
-- its random salt sealed with AES-256-GCM under the API's VISITOR_KEY (the day is the
-- associated data): the clear salt is never in the database. The API inserts today's and
-- tomorrow's rows and deletes those before yesterday.
--
-- Cost: a new empty table; no lock on any other. Processes of the previous release never
-- read it.
CREATE TABLE visitor_salts (
    day         date        PRIMARY KEY,
    sealed      bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
