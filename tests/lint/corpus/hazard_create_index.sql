-- expect: index_build public.tokens
CREATE INDEX tokens_scope ON tokens (scope);
