-- expect: safe
ALTER TABLE sessions ADD CONSTRAINT sessions_pkey PRIMARY KEY USING INDEX sessions_id_key;
