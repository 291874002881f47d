-- expect: safe
-- In one transaction: no other session sees the function missing.
DROP FUNCTION touch();
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
