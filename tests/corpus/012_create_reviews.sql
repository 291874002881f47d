CREATE TABLE reviews (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    book_id      bigint NOT NULL REFERENCES books (id) ON DELETE CASCADE,
    customer_id  bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    rating       smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body         text NOT NULL DEFAULT E'No review text; the customer only left a rating.',
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (book_id, customer_id)
);

-- Seed authors and books for the staging catalogue. E'' strings keep the
-- apostrophes readable with \' and allow \n in the blurbs.
INSERT INTO authors (name, bio) VALUES
    (E'Flann O\'Brien', E'Irish novelist; wrote \'The Third Policeman\'.\nDied 1966.'),
    ('Ursula K. Le Guin', 'Wrote about anarchists; and dragons.'),
    (E'Back\\slash Press', E'A publisher whose name ends in a backslash \\');

INSERT INTO books (isbn, title, author_id, format, price, stock, attributes)
SELECT '9780007187508', E'The Third Policeman', id, 'paperback', 1099, 12,
       'language => en, pages => 200'::hstore
FROM authors WHERE name = E'Flann O\'Brien';

INSERT INTO books (isbn, title, author_id, format, price, stock)
SELECT '9780060512750', 'The Dispossessed', id, 'hardcover', 2450, 3
FROM authors WHERE name = 'Ursula K. Le Guin';
