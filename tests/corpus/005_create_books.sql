CREATE TABLE authors (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name  text NOT NULL,
    bio   text
);

CREATE TABLE books (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    isbn         isbn13 NOT NULL UNIQUE,
    title        text NOT NULL,
    author_id    bigint NOT NULL REFERENCES authors (id),
    format       book_format NOT NULL DEFAULT 'paperback',
    price        price_cents NOT NULL,
    stock        integer NOT NULL DEFAULT 0 CHECK (stock >= 0),
    attributes   hstore NOT NULL DEFAULT ''::hstore,
    published_on date,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX books_author_id_idx ON books (author_id);
CREATE INDEX books_title_trgm_idx ON books USING gin (title gin_trgm_ops);
