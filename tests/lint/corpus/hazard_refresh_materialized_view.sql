-- expect: rewrite public.token_counts
REFRESH MATERIALIZED VIEW token_counts;
