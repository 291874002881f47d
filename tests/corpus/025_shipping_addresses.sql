/* Shipping addresses; one customer may have many; exactly one is the default.
   Semicolons in this comment; and in the strings below; must not split. */
CREATE TABLE addresses (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE, -- owner; cascade
    label        text NOT NULL DEFAULT 'home;default',
    line1        text NOT NULL,
    line2        text,
    city         text NOT NULL,
    postal_code  text NOT NULL,
    country      char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    is_default   boolean NOT NULL DEFAULT false
);

-- at most one default address per customer
CREATE UNIQUE INDEX addresses_one_default_idx ON addresses (customer_id) WHERE is_default;

COMMENT ON TABLE addresses IS 'Postal addresses; format: line1; line2; city';
