-- expect: rewrite public.rate_limits
ALTER TABLE rate_limits ALTER COLUMN hits TYPE text;
