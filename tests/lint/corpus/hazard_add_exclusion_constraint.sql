-- expect: index_build public.tokens
ALTER TABLE tokens ADD CONSTRAINT tokens_one_id EXCLUDE USING btree (id WITH =);
