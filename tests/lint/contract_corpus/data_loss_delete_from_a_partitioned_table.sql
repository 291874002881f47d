-- expect: data_loss public.events
DELETE FROM events WHERE id % 2 = 0;
