-- expect: breaking public.contacts.email
ALTER DOMAIN email SET NOT NULL;
