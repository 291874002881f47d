-- expect: safe
-- now() is stable, not volatile: PostgreSQL stores the default once instead of rewriting.
ALTER TABLE tokens ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
