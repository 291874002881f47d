-- Migration: 003_server_chosen_ids
-- Description: ids of the rows the runtime role inserts come from the server; the
--              runtime role holds no privilege on any sequence.
--
-- Runs as the owner role in one transaction, after 002 (which it does not change).
--
-- INSERT ... OVERRIDING SYSTEM VALUE needs nothing but INSERT on the table. With
-- table-level INSERT on security_events and SELECT on its identity's sequence (000
-- granted USAGE, SELECT on new sequences), the runtime role could insert the next
-- thousand ids ahead of the server, and every audited write then failed on a
-- duplicate key: registration (create_user), every login (record_successful_login),
-- the owner's own incident response, refresh-token reuse detection. So, on every
-- table of the schema with an identity column, a role other than the owner that may
-- insert keeps INSERT on each column but the identity; an identity's default takes
-- its value without any privilege on the sequence, so the runtime role needs none
-- and keeps none. 000 no longer grants it sequences by default.

DO $$
DECLARE
    spec record;
    insertable text;
BEGIN
    FOR spec IN
        SELECT c.oid::regclass AS tbl,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
          AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND a.grantee <> c.relowner AND a.privilege_type = 'INSERT'
          AND EXISTS (SELECT 1 FROM pg_attribute i
                      WHERE i.attrelid = c.oid AND i.attidentity <> '' AND NOT i.attisdropped)
    LOOP
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO insertable
        FROM pg_attribute
        WHERE attrelid = spec.tbl AND attnum > 0 AND NOT attisdropped AND attidentity = '';
        EXECUTE format('REVOKE INSERT ON %s FROM %s', spec.tbl, spec.grantee);
        EXECUTE format('GRANT INSERT (%s) ON %s TO %s', insertable, spec.tbl, spec.grantee);
    END LOOP;

    FOR spec IN
        SELECT c.oid::regclass AS seq,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S'
          AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %s', spec.seq, spec.grantee);
    END LOOP;

    -- Sequences the owner creates later: no privilege for anyone else by default.
    FOR spec IN
        SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END AS grantee
        FROM pg_default_acl d, aclexplode(d.defaclacl) a
        WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND d.defaclobjtype = 'S' AND d.defaclnamespace = 'public'::regnamespace
          AND a.grantee <> d.defaclrole
    LOOP
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM %s',
                       spec.grantee);
    END LOOP;
END
$$;
