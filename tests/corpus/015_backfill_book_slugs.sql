-- migrate:no-transaction
--
-- The backfill commits every batch so it never holds locks on all of books at
-- once; a procedure that COMMITs must be CALLed outside a transaction block,
-- which nothing in the SQL text reveals, hence the header above.
ALTER TABLE books ADD COLUMN IF NOT EXISTS slug text;

CREATE OR REPLACE PROCEDURE backfill_book_slugs(batch_size integer DEFAULT 500)
LANGUAGE plpgsql AS $proc$
DECLARE
    updated integer;
BEGIN
    LOOP
        UPDATE books
           SET slug = trim(BOTH '-' FROM regexp_replace(lower(title), '[^a-z0-9]+', '-', 'g'))
         WHERE id IN (SELECT id FROM books WHERE slug IS NULL LIMIT batch_size);
        GET DIAGNOSTICS updated = ROW_COUNT;
        EXIT WHEN updated = 0;
        COMMIT;
    END LOOP;
END
$proc$;

CALL backfill_book_slugs(100);

DROP PROCEDURE backfill_book_slugs(integer);
