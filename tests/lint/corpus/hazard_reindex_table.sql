-- expect: index_build public.tokens
REINDEX TABLE tokens;
