CREATE TABLE shipments (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      bigint NOT NULL REFERENCES orders (id),
    address_id    bigint NOT NULL REFERENCES addresses (id),
    carrier       text NOT NULL,
    tracking_code text,
    shipped_at    timestamptz
);

CREATE INDEX shipments_order_id_idx ON shipments (order_id)
