-- expect: safe
ALTER TABLE clients ADD COLUMN email text;
