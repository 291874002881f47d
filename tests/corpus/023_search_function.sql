-- Dynamic SQL inside a tagged dollar quote: the inner $q$ and $$ quotes do not
-- end the outer $fn$ body.
CREATE OR REPLACE FUNCTION search_books(p_query text, p_limit integer DEFAULT 20)
RETURNS TABLE (book_id bigint, title text, score real)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    sql text := $q$
        SELECT b.id, b.title, similarity(b.title, $1) AS score
          FROM books b
         WHERE b.title % $1   -- trigram match; $1 is a parameter, not a dollar quote
         ORDER BY score DESC
         LIMIT $2
    $q$;
BEGIN
    IF p_query IS NULL OR length(trim(p_query)) = 0 THEN
        RAISE EXCEPTION USING MESSAGE = $$empty search; give me something$$;
    END IF;
    RETURN QUERY EXECUTE sql USING p_query, p_limit;
END
$fn$;
