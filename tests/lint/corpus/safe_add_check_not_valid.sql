-- expect: safe
ALTER TABLE tokens ADD CONSTRAINT tokens_n_small CHECK (n < 1000000) NOT VALID;
