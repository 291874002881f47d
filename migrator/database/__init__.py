"""The database side: connections, the cluster's catalog, the migration lock, bootstrap,
trust, scratch databases. It never parses a migration file."""
