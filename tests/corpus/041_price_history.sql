CREATE TABLE price_history (
    book_id     bigint NOT NULL REFERENCES books (id) ON DELETE CASCADE,
    old_price   price_cents,
    new_price   price_cents NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX price_history_book_id_changed_at_idx ON price_history (book_id, changed_at DESC);

CREATE OR REPLACE FUNCTION record_price_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.price IS DISTINCT FROM OLD.price THEN
        INSERT INTO price_history (book_id, old_price, new_price)
        VALUES (NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.price END, NEW.price);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER books_record_price_change
    AFTER INSERT OR UPDATE OF price ON books
    FOR EACH ROW EXECUTE FUNCTION record_price_change();
