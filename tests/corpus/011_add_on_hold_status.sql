-- Since PostgreSQL 12 ADD VALUE works in a transaction, but the new value must
-- not be used before the transaction commits, so nothing below mentions it.
ALTER TYPE order_status ADD VALUE IF NOT EXISTS 'on_hold' BEFORE 'paid';

ALTER TABLE orders ADD COLUMN hold_reason text;

COMMENT ON COLUMN orders.hold_reason IS 'Why an order is on hold; NULL otherwise.';
