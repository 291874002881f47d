-- expect: safe
ALTER TABLE tokens SET (fillfactor = 70);
