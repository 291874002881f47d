-- expect: index_build public.rate_limits
ALTER TABLE rate_limits ADD PRIMARY KEY (key);
