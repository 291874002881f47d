CREATE DOMAIN email_address AS citext
    CHECK (VALUE ~ '^[^@\s]+@[^@\s]+\.[^@\s]+$');

CREATE DOMAIN price_cents AS bigint
    CHECK (VALUE >= 0);

CREATE DOMAIN isbn13 AS text
    CHECK (VALUE ~ '^97[89][0-9]{10}$');

CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');

CREATE TYPE book_format AS ENUM ('hardcover', 'paperback', 'ebook');
