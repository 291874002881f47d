-- Extensions the shop relies on. All of them ship with PostgreSQL's contrib.
CREATE EXTENSION IF NOT EXISTS citext;      -- case-insensitive e-mail addresses
CREATE EXTENSION IF NOT EXISTS pg_trgm;     -- fuzzy title search
CREATE EXTENSION IF NOT EXISTS btree_gist;  -- exclusion constraints mixing = and &&
CREATE EXTENSION IF NOT EXISTS hstore;      -- free-form product attributes
