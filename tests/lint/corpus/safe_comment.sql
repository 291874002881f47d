-- expect: safe
COMMENT ON TABLE tokens IS 'OAuth access tokens';
