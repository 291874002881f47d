CREATE TABLE wishlists (
    customer_id  bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    book_id      bigint NOT NULL REFERENCES books (id) ON DELETE CASCADE,
    tags         text[] NOT NULL DEFAULT '{}',
    added_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, book_id)
);

CREATE INDEX wishlists_tags_idx ON wishlists USING gin (tags);
