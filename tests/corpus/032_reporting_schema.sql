-- Read-only reporting schema for the BI tool.
CREATE SCHEMA IF NOT EXISTS reporting;

CREATE VIEW reporting.book_ratings AS
SELECT b.id AS book_id,
       b.title,
       round(avg(r.rating), 2) AS average_rating,
       count(r.id) AS review_count
FROM books b
LEFT JOIN reviews r ON r.book_id = b.id
GROUP BY b.id, b.title;

CREATE VIEW reporting.top_customers AS
SELECT c.id AS customer_id, c.full_name, sum(t.total_cents) AS lifetime_cents
FROM customers c
JOIN order_totals t ON t.customer_id = c.id
WHERE t.status IN ('paid', 'shipped')
GROUP BY c.id, c.full_name;

GRANT USAGE ON SCHEMA reporting TO shop_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO shop_reader;
