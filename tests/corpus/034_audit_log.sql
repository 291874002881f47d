CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name  text NOT NULL,
    operation   text NOT NULL,
    row_before  jsonb,
    row_after   jsonb,
    changed_by  text NOT NULL DEFAULT current_user,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $audit$
BEGIN
    INSERT INTO audit_log (table_name, operation, row_before, row_after)
    VALUES (
        TG_TABLE_NAME,
        TG_OP,
        CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
        CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END
    );
    RETURN coalesce(NEW, OLD);
END;
$audit$;

DO $attach$
DECLARE
    audited text;
BEGIN
    FOREACH audited IN ARRAY ARRAY['orders', 'payments', 'coupons'] LOOP
        EXECUTE format($sql$
            CREATE TRIGGER %1$I
                AFTER INSERT OR UPDATE OR DELETE ON %2$I
                FOR EACH ROW EXECUTE FUNCTION audit_row_change()
        $sql$, audited || '_audit', audited);
    END LOOP;
END
$attach$;
