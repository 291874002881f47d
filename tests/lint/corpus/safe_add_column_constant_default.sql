-- expect: safe
ALTER TABLE tokens ADD COLUMN attempts int DEFAULT 0;
