-- expect: data_loss public.tokens.scope
-- expect: breaking public.tokens.scope
ALTER TABLE tokens DROP COLUMN scope;
