-- Customers see only their own addresses when the API sets app.customer_id.
ALTER TABLE addresses ENABLE ROW LEVEL SECURITY;

CREATE POLICY addresses_owner ON addresses
    FOR ALL
    TO shop_writer
    USING (customer_id = nullif(current_setting('app.customer_id', true), '')::bigint)
    WITH CHECK (customer_id = nullif(current_setting('app.customer_id', true), '')::bigint);

CREATE POLICY addresses_reporting ON addresses
    FOR SELECT
    TO shop_reader
    USING (true);
