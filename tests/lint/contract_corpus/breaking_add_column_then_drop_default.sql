-- expect: breaking public.tokens.region
-- Harmless one statement at a time; together, the running release's INSERTs omit region.
ALTER TABLE tokens ADD COLUMN region text NOT NULL DEFAULT 'eu';
ALTER TABLE tokens ALTER COLUMN region DROP DEFAULT;
