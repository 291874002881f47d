-- expect: safe
ALTER TABLE tokens ADD COLUMN note text;
