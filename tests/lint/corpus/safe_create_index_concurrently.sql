-- expect: safe
CREATE INDEX CONCURRENTLY IF NOT EXISTS tokens_scope_cc ON tokens (scope);
