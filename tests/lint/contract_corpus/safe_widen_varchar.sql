-- expect: safe
ALTER TABLE tokens ALTER COLUMN code TYPE varchar(20);
