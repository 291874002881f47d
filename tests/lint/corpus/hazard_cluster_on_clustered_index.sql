-- expect: rewrite public.tokens
CLUSTER tokens;
