-- expect: data_loss public.events.kind
-- expect: breaking public.events.kind
ALTER TABLE events DROP COLUMN kind;
