-- expect: breaking public.token_kind
DROP TYPE token_kind;
