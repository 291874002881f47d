-- expect: safe
VACUUM (ANALYZE) tokens;
