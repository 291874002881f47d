-- expect: safe
ALTER TABLE tokens ALTER COLUMN expires_at DROP NOT NULL;
ALTER TABLE tokens ALTER COLUMN client_id DROP NOT NULL;
