-- expect: breaking public.touch()
-- migrate:no-transaction
-- Each statement commits: other sessions see the function missing in between.
DROP FUNCTION IF EXISTS touch();
CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
