-- expect: breaking public.tokens.n
ALTER TABLE tokens ALTER COLUMN n SET NOT NULL;
