-- expect: scan public.tokens
ALTER TABLE tokens ALTER COLUMN n SET NOT NULL;
