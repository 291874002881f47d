-- expect: safe
-- The rename path: the old name stays, as a view the running release reads and writes.
ALTER TABLE legacy_grants RENAME TO grants;
CREATE VIEW legacy_grants AS SELECT id, note FROM grants;
