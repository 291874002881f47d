-- expect: scan public.sessions
-- A NOT VALID CHECK (device_id IS NOT NULL) proves nothing: the table is still read in full.
ALTER TABLE sessions ALTER COLUMN device_id SET NOT NULL;
