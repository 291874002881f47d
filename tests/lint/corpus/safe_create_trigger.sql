-- expect: safe
CREATE TRIGGER tokens_touch BEFORE UPDATE ON tokens FOR EACH ROW EXECUTE FUNCTION touch();
