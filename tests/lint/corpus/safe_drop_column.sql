-- expect: safe
ALTER TABLE tokens DROP COLUMN n;
