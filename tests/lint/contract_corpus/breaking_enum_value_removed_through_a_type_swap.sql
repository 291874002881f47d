-- expect: breaking public.contact_kind.'company'
-- The column keeps its type's name, but the new type has lost a value.
CREATE TYPE contact_kind_new AS ENUM ('person');
ALTER TABLE contacts ALTER COLUMN kind DROP DEFAULT;
ALTER TABLE contacts ALTER COLUMN kind TYPE contact_kind_new USING kind::text::contact_kind_new;
ALTER TABLE contacts ALTER COLUMN kind SET DEFAULT 'person';
DROP TYPE contact_kind;
ALTER TYPE contact_kind_new RENAME TO contact_kind;
