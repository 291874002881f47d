-- expect: rewrite public.tokens
ALTER TABLE tokens ALTER COLUMN code TYPE varchar(8);
