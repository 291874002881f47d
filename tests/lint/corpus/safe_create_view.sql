-- expect: safe
CREATE VIEW live_tokens AS SELECT * FROM tokens WHERE expires_at > now();
