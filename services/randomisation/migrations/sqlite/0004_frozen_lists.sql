-- Once a trial is activated its uploaded list is the allocation sequence:
-- no slot is added, changed or removed, and the activation audit record
-- commits to the list as stored.

CREATE TRIGGER allocation_lists_frozen_insert BEFORE INSERT ON allocation_lists
WHEN (SELECT sealed_seed FROM trials WHERE trial_id = NEW.trial_id) IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'an activated trial''s allocation list is frozen');
END;

CREATE TRIGGER allocation_lists_frozen_update BEFORE UPDATE ON allocation_lists
WHEN (SELECT sealed_seed FROM trials WHERE trial_id = OLD.trial_id) IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'an activated trial''s allocation list is frozen');
END;

CREATE TRIGGER allocation_lists_frozen_delete BEFORE DELETE ON allocation_lists
WHEN (SELECT sealed_seed FROM trials WHERE trial_id = OLD.trial_id) IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'an activated trial''s allocation list is frozen');
END;
