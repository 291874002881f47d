-- expect: safe
-- token_count(3) still resolves, to the new function.
DROP FUNCTION token_count(int);
CREATE FUNCTION token_count(client int, active boolean DEFAULT true) RETURNS bigint LANGUAGE sql
    AS $$ SELECT count(*) FROM tokens WHERE client_id = client AND active $$;
