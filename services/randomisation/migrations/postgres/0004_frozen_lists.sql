-- Once a trial is activated its uploaded list is the allocation sequence:
-- no slot is added, changed or removed, and the activation audit record
-- commits to the list as stored.

CREATE FUNCTION equipoise_allocation_list_frozen() RETURNS trigger AS $$
DECLARE
    slot_trial TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        slot_trial := NEW.trial_id;
    ELSE
        slot_trial := OLD.trial_id;
    END IF;
    IF EXISTS (SELECT 1 FROM trials
               WHERE trial_id = slot_trial AND sealed_seed IS NOT NULL) THEN
        RAISE EXCEPTION 'an activated trial''s allocation list is frozen';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER allocation_lists_frozen BEFORE INSERT OR UPDATE OR DELETE ON allocation_lists
FOR EACH ROW EXECUTE FUNCTION equipoise_allocation_list_frozen();
