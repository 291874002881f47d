COMMENT ON TABLE customers IS 'People who can log in to the shop; one row per e-mail.';
COMMENT ON COLUMN customers.full_name IS 'Generated from first_name and last_name; read-only.';
COMMENT ON TABLE books IS E'The catalogue.\nPrices are in EUR cents; stock can\'t go negative.';
COMMENT ON COLUMN books.attributes IS
    E'Free-form hstore: pages, language, format, ...\nKeys are lower case; values can\'t be typed\\.';
COMMENT ON TYPE order_status IS 'pending -> on_hold? -> paid -> shipped -> refunded?; or cancelled';
COMMENT ON DOMAIN price_cents IS 'Money as a non-negative integer number of cents';
COMMENT ON FUNCTION order_total_cents(bigint) IS 'Sum of an order''s lines, in cents';
COMMENT ON MATERIALIZED VIEW daily_sales IS 'Refreshed nightly by the scheduler.';
