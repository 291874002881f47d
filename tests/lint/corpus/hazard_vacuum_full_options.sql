-- expect: rewrite public.tokens
VACUUM (FULL, ANALYZE) tokens;
