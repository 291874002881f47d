-- expect: breaking public.touch()
DROP FUNCTION touch();
