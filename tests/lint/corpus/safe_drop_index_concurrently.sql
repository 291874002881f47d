-- expect: safe
DROP INDEX CONCURRENTLY tokens_expires_at;
