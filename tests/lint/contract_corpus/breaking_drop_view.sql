-- expect: breaking public.client_names
DROP VIEW client_names;
