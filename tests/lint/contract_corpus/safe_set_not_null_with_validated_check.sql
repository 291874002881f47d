-- expect: safe
-- The validated CHECK (user_id IS NOT NULL) already refuses the INSERTs that omit user_id.
ALTER TABLE sessions ALTER COLUMN user_id SET NOT NULL;
