-- A SQL-standard function body (PostgreSQL 14+): parsed at creation time and
-- tracked as a dependency, unlike a string body. The semicolons inside
-- BEGIN ATOMIC ... END belong to the function, not to the file.
CREATE OR REPLACE FUNCTION order_total_cents(p_order_id bigint) RETURNS bigint
LANGUAGE sql
STABLE
BEGIN ATOMIC
    SELECT CASE
               WHEN count(*) = 0 THEN 0
               ELSE sum(quantity * unit_price)
           END::bigint
      FROM order_items
     WHERE order_id = p_order_id;
END;

CREATE OR REPLACE PROCEDURE cancel_stale_orders(p_older_than interval)
LANGUAGE sql
BEGIN ATOMIC
    UPDATE orders SET status = 'cancelled'
     WHERE status = 'pending' AND placed_at < now() - p_older_than;
    DELETE FROM order_items
     WHERE order_id IN (SELECT id FROM orders WHERE status = 'cancelled');
END;
