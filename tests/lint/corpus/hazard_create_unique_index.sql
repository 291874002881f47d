-- expect: index_build public.tokens
CREATE UNIQUE INDEX tokens_id_scope ON tokens (id, scope);
