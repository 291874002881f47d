-- expect: safe
-- The validated CHECK (user_id IS NOT NULL) lets PostgreSQL skip the scan.
ALTER TABLE sessions ALTER COLUMN user_id SET NOT NULL;
