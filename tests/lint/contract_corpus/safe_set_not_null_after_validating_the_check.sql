-- expect: safe
-- The CHECK (device_id IS NOT NULL) NOT VALID of the release before already checks new rows.
ALTER TABLE sessions VALIDATE CONSTRAINT sessions_device_id_not_null;
ALTER TABLE sessions ALTER COLUMN device_id SET NOT NULL;
