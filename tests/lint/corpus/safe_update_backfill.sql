-- expect: safe
UPDATE tokens SET n = n + 1;
