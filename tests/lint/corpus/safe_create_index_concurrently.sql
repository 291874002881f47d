-- expect: safe
CREATE INDEX CONCURRENTLY tokens_scope_cc ON tokens (scope);
