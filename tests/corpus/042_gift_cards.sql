CREATE TABLE gift_cards (
    code         text PRIMARY KEY CHECK (code ~ '^GC-[A-Z0-9]{12}$'),
    balance      price_cents NOT NULL,
    issued_to    bigint REFERENCES customers (id),
    "note; internal" text,
    expires_on   date NOT NULL DEFAULT (current_date + 365)
);

ALTER TABLE payments DROP CONSTRAINT payments_provider_check;
ALTER TABLE payments ADD CONSTRAINT payments_provider_check
    CHECK (provider IN ('card', 'paypal', 'invoice', 'gift_card'));

COMMENT ON COLUMN gift_cards."note; internal" IS 'Never shown to the customer'
-- no semicolon after the last statement; psql sends it at end of file
