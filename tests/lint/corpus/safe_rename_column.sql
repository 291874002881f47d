-- expect: safe
ALTER TABLE tokens RENAME COLUMN scope TO scopes;
