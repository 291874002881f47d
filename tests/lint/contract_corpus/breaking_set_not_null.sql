-- expect: breaking public.sessions.user_id
ALTER TABLE sessions ALTER COLUMN user_id SET NOT NULL;
