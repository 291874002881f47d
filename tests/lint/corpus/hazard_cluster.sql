-- expect: rewrite public.tokens
CLUSTER tokens USING tokens_pkey;
