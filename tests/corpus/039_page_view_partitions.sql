CREATE OR REPLACE FUNCTION create_page_view_partition(p_month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    partition_name text := format('page_views_%s', to_char(p_month, 'YYYY_MM'));
    from_ts timestamptz := date_trunc('month', p_month::timestamp) AT TIME ZONE 'UTC';
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF page_views FOR VALUES FROM (%L) TO (%L)',
        partition_name, from_ts, from_ts + interval '1 month');
    RETURN partition_name;
END;
$$;

SELECT create_page_view_partition(date '2024-03-01');
SELECT create_page_view_partition(date '2024-04-01');
