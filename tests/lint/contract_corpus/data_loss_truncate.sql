-- expect: data_loss public.legacy_grants
TRUNCATE legacy_grants;
