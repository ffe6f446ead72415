-- Once a trial is activated, its sealed seed, algorithm version and
-- activation time never change: together they fix every allocation the
-- trial will make, and the activation audit record commits to them.

CREATE FUNCTION equipoise_trial_activation_frozen() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.sealed_seed IS NOT NULL THEN
            RAISE EXCEPTION 'an activated trial is never deleted';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.sealed_seed IS NOT NULL
       AND (NEW.sealed_seed IS DISTINCT FROM OLD.sealed_seed
            OR NEW.algorithm_version IS DISTINCT FROM OLD.algorithm_version
            OR NEW.activated_at IS DISTINCT FROM OLD.activated_at) THEN
        RAISE EXCEPTION 'a trial''s sealed seed, algorithm version and activation time are frozen once set';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER trials_activation_frozen BEFORE UPDATE OR DELETE ON trials
FOR EACH ROW EXECUTE FUNCTION equipoise_trial_activation_frozen();
