-- expect: safe
CREATE UNIQUE INDEX CONCURRENTLY tokens_id_scope_cc ON tokens (id, scope);
