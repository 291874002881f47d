-- One-off data fix in an anonymous block with a tagged body.
DO $backfill$
DECLARE
    b record;
BEGIN
    FOR b IN SELECT id, format FROM books WHERE NOT attributes ? 'format' LOOP
        UPDATE books
           SET attributes = attributes || hstore('format', b.format::text)
         WHERE id = b.id;
    END LOOP;
    RAISE NOTICE 'book attributes backfilled; % rows', (SELECT count(*) FROM books);
END
$backfill$;
