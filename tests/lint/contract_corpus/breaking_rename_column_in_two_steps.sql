-- expect: breaking public.clients.name
-- The old name is back, on a new empty column: the values are in name_old.
ALTER TABLE clients RENAME COLUMN name TO name_old;
ALTER TABLE clients ADD COLUMN name text;
