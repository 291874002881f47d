-- The backfills rewrote most of books; update the statistics and the
-- visibility map now rather than waiting for autovacuum.
VACUUM (ANALYZE) books;
ANALYZE customers;
