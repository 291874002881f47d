CREATE OR REPLACE FUNCTION reserve_stock() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    UPDATE books SET stock = stock - NEW.quantity WHERE id = NEW.book_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'book % does not exist', NEW.book_id;
    END IF;
    RETURN NEW;
EXCEPTION
    WHEN check_violation THEN
        RAISE EXCEPTION E'not enough stock for book %; it\'s sold out', NEW.book_id
            USING ERRCODE = 'P0001', HINT = 'Lower the quantity.';
END;
$body$;

CREATE TRIGGER order_items_reserve_stock
    AFTER INSERT ON order_items
    FOR EACH ROW EXECUTE FUNCTION reserve_stock();
