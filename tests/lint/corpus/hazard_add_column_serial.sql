-- expect: rewrite public.tokens
ALTER TABLE tokens ADD COLUMN seq serial;
