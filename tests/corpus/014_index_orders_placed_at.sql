-- orders is the busiest table: build the index without blocking writes.
-- PostgreSQL refuses CREATE INDEX CONCURRENTLY inside a transaction block;
-- the runner sees that and runs this file in autocommit.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_placed_at_idx
    ON orders (placed_at DESC);
