-- expect: safe
ALTER TABLE tokens VALIDATE CONSTRAINT tokens_client_fk;
