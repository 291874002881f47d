-- This file was written for psql and manages its own transaction.
BEGIN;

CREATE TABLE payments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    bigint NOT NULL REFERENCES orders (id),
    amount      price_cents NOT NULL,
    provider    text NOT NULL CHECK (provider IN ('card', 'paypal', 'invoice')),
    paid_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_order_id_idx ON payments (order_id);

COMMIT;
