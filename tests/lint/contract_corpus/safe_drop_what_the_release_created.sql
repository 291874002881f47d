-- expect: safe
CREATE TABLE import_batch (id int);
INSERT INTO import_batch VALUES (1);
DELETE FROM import_batch;
DROP TABLE import_batch;
