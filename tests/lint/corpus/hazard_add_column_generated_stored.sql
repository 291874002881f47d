-- expect: rewrite public.tokens
ALTER TABLE tokens ADD COLUMN n2 int GENERATED ALWAYS AS (n * 2) STORED;
