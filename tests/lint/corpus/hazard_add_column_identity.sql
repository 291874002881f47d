-- expect: rewrite public.tokens
ALTER TABLE tokens ADD COLUMN number int GENERATED ALWAYS AS IDENTITY;
