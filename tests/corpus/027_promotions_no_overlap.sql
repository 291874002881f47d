-- Two promotions for the same book must never overlap in time: an exclusion
-- constraint mixing equality (btree_gist) and range overlap.
CREATE TABLE promotions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    book_id     bigint NOT NULL REFERENCES books (id) ON DELETE CASCADE,
    percent_off smallint NOT NULL CHECK (percent_off BETWEEN 1 AND 90),
    active      tstzrange NOT NULL,
    EXCLUDE USING gist (book_id WITH =, active WITH &&)
);
