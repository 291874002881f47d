-- migrate:no-transaction
-- Swap the old customers index for a covering one without blocking sign-ups.
DROP INDEX CONCURRENTLY IF EXISTS customers_created_at_idx;

CREATE INDEX CONCURRENTLY IF NOT EXISTS customers_created_at_id_idx
    ON customers (created_at) INCLUDE (id);
