-- expect: safe
CREATE STATISTICS tokens_client_n ON client_id, n FROM tokens;
