-- expect: safe
ALTER TABLE tokens ADD CONSTRAINT tokens_client_fk2 FOREIGN KEY (client_id) REFERENCES clients (id) NOT VALID;
