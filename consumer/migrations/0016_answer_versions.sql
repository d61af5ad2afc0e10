-- 0016: the versions the stats API keys its kept answers by: a counter per site that each
-- consumer batch bumps for the sites it stores events of, and one epoch that every other
-- transaction changing what the stats read bumps (docs/decisions/0032-answers-by-site-version.md).
-- Two small tables, nothing filled: a site without a row is at version 0.
--
-- Consumers of the previous release do not bump the sites they write: while one runs beside
-- an API of this release, that API keeps serving a site's answers computed before the old
-- consumer's batches until the site's next batch from a new consumer (docs/operations.md,
-- upgrading). Stop the old consumers right after migrating.
CREATE TABLE site_versions (
    site_id  text   PRIMARY KEY,
    version  bigint NOT NULL
);

CREATE TABLE data_epoch (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch     bigint  NOT NULL
);
INSERT INTO data_epoch (epoch) VALUES (0);
