-- This migration intentionally does nothing.
--
-- We planned to add a currency column to books; (see ticket SHOP-112) the
-- decision was to keep all prices in EUR cents.
/*
   Kept as a record of the decision. The SQL we did not run:
   /* ALTER TABLE books ADD COLUMN currency char(3) NOT NULL DEFAULT 'EUR'; */
   Nested comments like the one above are legal in PostgreSQL.
*/
