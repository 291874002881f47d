-- expect: rewrite public.tokens
ALTER TABLE tokens SET UNLOGGED;
