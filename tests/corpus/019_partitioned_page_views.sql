-- Page views arrive at high volume; monthly partitions make retention a DROP.
CREATE TABLE page_views (
    viewed_at    timestamptz NOT NULL,
    book_id      bigint NOT NULL,
    customer_id  bigint,
    referrer     text
) PARTITION BY RANGE (viewed_at);

CREATE TABLE page_views_2024_01 PARTITION OF page_views
    FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00');
CREATE TABLE page_views_2024_02 PARTITION OF page_views
    FOR VALUES FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00');
CREATE TABLE page_views_default PARTITION OF page_views DEFAULT;

CREATE INDEX page_views_book_id_viewed_at_idx ON page_views (book_id, viewed_at);
