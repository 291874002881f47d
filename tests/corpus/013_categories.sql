-- Categories come from a supplier feed whose column names we keep verbatim,
-- punctuation (even ";") included, hence the quoted identifiers.
CREATE TABLE categories (
    id                   integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "feed;code"          text NOT NULL UNIQUE,
    "Display Name"       text NOT NULL,
    "parent ""id"""      integer REFERENCES categories (id)
);

CREATE TABLE book_categories (
    book_id      bigint NOT NULL REFERENCES books (id) ON DELETE CASCADE,
    category_id  integer NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    PRIMARY KEY (book_id, category_id)
);

INSERT INTO categories ("feed;code", "Display Name") VALUES
    ('FIC;GEN', 'Fiction'),
    ('SCI;FI', U&'Science fiction \0026 fantasy'),
    ('CAF', U&'Caf\00E9 culture');

COMMENT ON COLUMN categories."feed;code" IS U&'Supplier code, e.g. \0022FIC;GEN\0022';
