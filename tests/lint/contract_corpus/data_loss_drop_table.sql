-- expect: data_loss public.legacy_grants
-- expect: breaking public.legacy_grants
DROP TABLE legacy_grants;
