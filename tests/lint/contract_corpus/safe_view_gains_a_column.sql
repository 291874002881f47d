-- expect: safe
CREATE OR REPLACE VIEW client_names AS SELECT id, name, id * 2 AS twice FROM clients;
