-- expect: rewrite public.tokens
VACUUM FULL tokens;
