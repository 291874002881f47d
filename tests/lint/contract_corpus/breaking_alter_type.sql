-- expect: breaking public.tokens.n
ALTER TABLE tokens ALTER COLUMN n TYPE bigint;
