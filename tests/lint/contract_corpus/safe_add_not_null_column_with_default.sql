-- expect: safe
ALTER TABLE clients ADD COLUMN active boolean NOT NULL DEFAULT true;
