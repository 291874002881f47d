-- expect: breaking public.client_names
-- Same columns, but a copy: new clients no longer show in it.
DROP VIEW client_names;
CREATE TABLE client_names AS SELECT id, name FROM clients;
