-- expect: safe
ALTER TABLE tokens VALIDATE CONSTRAINT tokens_n_nonnegative;
