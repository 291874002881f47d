-- expect: rewrite public.tokens
ALTER TABLE tokens ADD COLUMN jitter float8 DEFAULT random();
