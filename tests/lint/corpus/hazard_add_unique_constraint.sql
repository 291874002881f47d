-- expect: index_build public.tokens
ALTER TABLE tokens ADD CONSTRAINT tokens_id_code_key UNIQUE (id, code);
