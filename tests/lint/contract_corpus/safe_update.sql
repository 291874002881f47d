-- expect: safe
-- Updates are not data loss here: see README, Hazard lint (a backfill is the safe path itself).
UPDATE legacy_grants SET note = upper(note);
