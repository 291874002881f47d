-- expect: safe
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS tokens_id_scope_cc ON tokens (id, scope);
