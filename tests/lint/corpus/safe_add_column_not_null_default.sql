-- expect: safe
ALTER TABLE tokens ADD COLUMN revoked boolean NOT NULL DEFAULT false;
