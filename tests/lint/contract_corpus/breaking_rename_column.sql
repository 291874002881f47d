-- expect: breaking public.clients.name
ALTER TABLE clients RENAME COLUMN name TO display_name;
