CREATE TABLE orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers (id) ON DELETE RESTRICT,
    status       order_status NOT NULL DEFAULT 'pending',
    placed_at    timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    order_id     bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    book_id      bigint NOT NULL REFERENCES books (id),
    quantity     integer NOT NULL CHECK (quantity > 0),
    unit_price   price_cents NOT NULL,
    PRIMARY KEY (order_id, book_id)
);

CREATE INDEX orders_customer_id_idx ON orders (customer_id);
CREATE INDEX order_items_book_id_idx ON order_items (book_id);
