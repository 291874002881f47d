-- expect: rewrite public.rate_limits
ALTER TABLE rate_limits SET LOGGED;
