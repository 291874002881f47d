-- expect: safe
CREATE TABLE tokens_copy AS SELECT * FROM tokens;
