CREATE VIEW order_totals AS
SELECT o.id AS order_id,
       o.customer_id,
       o.status,
       coalesce(sum(i.quantity * i.unit_price), 0)::bigint AS total_cents,
       count(i.book_id) AS line_count
FROM orders o
LEFT JOIN order_items i ON i.order_id = o.id
GROUP BY o.id;

COMMENT ON VIEW order_totals IS 'One row per order; totals in cents (no tax; no shipping).';
