-- expect: data_loss public.legacy_grants
DELETE FROM legacy_grants WHERE id < 10;
