-- expect: safe
ANALYZE tokens;
