-- Once a trial is activated, its sealed seed, algorithm version and
-- activation time never change: together they fix every allocation the
-- trial will make, and the activation audit record commits to them.

CREATE TRIGGER trials_activation_frozen
BEFORE UPDATE OF sealed_seed, algorithm_version, activated_at ON trials
WHEN OLD.sealed_seed IS NOT NULL
 AND (NEW.sealed_seed IS NOT OLD.sealed_seed
      OR NEW.algorithm_version IS NOT OLD.algorithm_version
      OR NEW.activated_at IS NOT OLD.activated_at)
BEGIN
    SELECT RAISE(ABORT, 'a trial''s sealed seed, algorithm version and activation time are frozen once set');
END;

CREATE TRIGGER trials_active_no_delete BEFORE DELETE ON trials
WHEN OLD.sealed_seed IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'an activated trial is never deleted');
END;
