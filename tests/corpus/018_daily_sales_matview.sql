CREATE MATERIALIZED VIEW daily_sales AS
SELECT date_trunc('day', o.placed_at)::date AS day,
       count(DISTINCT o.id) AS orders,
       sum(i.quantity * i.unit_price)::bigint AS revenue_cents
FROM orders o
JOIN order_items i ON i.order_id = o.id
WHERE o.status IN ('paid', 'shipped')
GROUP BY 1
WITH DATA;

-- REFRESH ... CONCURRENTLY needs a unique index on the materialized view.
CREATE UNIQUE INDEX daily_sales_day_idx ON daily_sales (day);

REFRESH MATERIALIZED VIEW daily_sales;
