-- Roles are global to the cluster, so create them only when missing: the same
-- history may be applied to several databases on one server.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'shop_reader') THEN
        CREATE ROLE shop_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'shop_writer') THEN
        CREATE ROLE shop_writer NOLOGIN;
    END IF;
END
$$;
