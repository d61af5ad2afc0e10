-- 0008: reserved for a migration of another branch (numbers run without gaps); this
-- placeholder goes when that branch's 0008 is merged.
SELECT 1;
