-- expect: safe
DROP INDEX CONCURRENTLY IF EXISTS tokens_expires_at;
