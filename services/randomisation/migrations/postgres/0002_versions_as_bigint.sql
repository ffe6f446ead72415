-- Version columns as BIGINT, as SQLite's INTEGER already is, so both stores
-- decode the same rows (i64).

-- PostgreSQL cannot change the type of a column a trigger names, so the
-- assignment guard is dropped and recreated unchanged, in this transaction.
DROP TRIGGER allocations_assignment_frozen ON allocations;

ALTER TABLE trials
    ALTER COLUMN version TYPE BIGINT,
    ALTER COLUMN algorithm_version TYPE BIGINT;
ALTER TABLE trial_versions ALTER COLUMN version TYPE BIGINT;
ALTER TABLE allocations ALTER COLUMN trial_version TYPE BIGINT;

CREATE TRIGGER allocations_assignment_frozen
BEFORE UPDATE OF trial_id, subject_id, site_id, stratum, stream_key, position, arm,
                 randomisation_number, request_sha256, covariates_json, decision_json,
                 trial_version, randomised_at ON allocations
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('an allocation''s assignment is immutable');
