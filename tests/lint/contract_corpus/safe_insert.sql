-- expect: safe
INSERT INTO legacy_grants VALUES (9999, 'new');
