-- expect: safe
REINDEX INDEX CONCURRENTLY tokens_expires_at;
