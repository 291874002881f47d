ALTER TABLE order_items
    ADD COLUMN line_total bigint GENERATED ALWAYS AS (quantity * unit_price) STORED;
