-- expect: rewrite public.tokens
ALTER TABLE tokens ADD COLUMN public_id uuid NOT NULL DEFAULT gen_random_uuid();
