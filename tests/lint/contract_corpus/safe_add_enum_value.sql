-- expect: safe
ALTER TYPE token_kind ADD VALUE 'device';
