-- expect: breaking public.legacy_grants
ALTER TABLE legacy_grants RENAME TO old_grants;
