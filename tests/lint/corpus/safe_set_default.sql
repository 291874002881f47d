-- expect: safe
ALTER TABLE tokens ALTER COLUMN n SET DEFAULT 1;
