-- expect: rewrite public.tokens
ALTER TABLE tokens ALTER COLUMN n TYPE bigint;
