-- Support staff "cancel" through this view; a rule turns the delete into a
-- status change plus a note, two actions in one parenthesised list whose
-- semicolons do not end the CREATE RULE statement.
CREATE TABLE order_notes (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id  bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    note      text NOT NULL,
    noted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW open_orders AS
SELECT id, customer_id, status, placed_at FROM orders
WHERE status IN ('pending', 'on_hold', 'paid');

CREATE RULE open_orders_cancel AS ON DELETE TO open_orders
DO INSTEAD (
    UPDATE orders SET status = 'cancelled' WHERE id = OLD.id;
    INSERT INTO order_notes (order_id, note) VALUES (OLD.id, 'cancelled by support; via open_orders');
);
