ALTER TABLE reviews RENAME COLUMN body TO review_text;
ALTER TABLE reviews ADD COLUMN helpful_votes integer NOT NULL DEFAULT 0;
