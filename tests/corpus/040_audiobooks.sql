ALTER TYPE book_format ADD VALUE IF NOT EXISTS 'audiobook';

-- Narrators apply to audiobooks only, but nothing here uses the new enum
-- value: it cannot be used in the transaction that added it.
CREATE TABLE narrators (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL
);

ALTER TABLE books ADD COLUMN narrator_id bigint REFERENCES narrators (id);
ALTER TABLE books ADD COLUMN duration interval;
