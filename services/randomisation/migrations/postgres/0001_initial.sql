-- Randomisation service schema, version 1 (PostgreSQL).

CREATE TABLE trials (
    trial_id          TEXT PRIMARY KEY,
    version           INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('draft', 'active', 'closed')),
    definition_yaml   TEXT NOT NULL,
    definition_sha256 TEXT NOT NULL,
    algorithm_version INTEGER,
    sealed_seed       BYTEA,
    registered_at     TEXT NOT NULL,
    activated_at      TEXT,
    closed_at         TEXT
);

CREATE TABLE trial_versions (
    trial_id          TEXT NOT NULL REFERENCES trials (trial_id),
    version           INTEGER NOT NULL,
    definition_yaml   TEXT NOT NULL,
    definition_sha256 TEXT NOT NULL,
    reason            TEXT NOT NULL,
    recorded_at       TEXT NOT NULL,
    PRIMARY KEY (trial_id, version)
);

-- The fencing authority: a commit is a compare-and-set on the version.
CREATE TABLE allocation_streams (
    trial_id   TEXT NOT NULL REFERENCES trials (trial_id),
    stream_key TEXT NOT NULL,
    version    BIGINT NOT NULL,
    PRIMARY KEY (trial_id, stream_key)
);

CREATE TABLE allocations (
    sequence             BIGSERIAL PRIMARY KEY,
    trial_id             TEXT NOT NULL REFERENCES trials (trial_id),
    subject_id           TEXT NOT NULL,
    site_id              TEXT NOT NULL,
    stratum              TEXT NOT NULL,
    stream_key           TEXT NOT NULL,
    position             BIGINT NOT NULL,
    arm                  TEXT NOT NULL,
    randomisation_number TEXT NOT NULL,
    request_sha256       TEXT NOT NULL,
    covariates_json      TEXT NOT NULL,
    decision_json        TEXT NOT NULL,
    trial_version        INTEGER NOT NULL,
    randomised_at        TEXT NOT NULL,
    corrected_stratum    TEXT,
    correction_reason    TEXT,
    in_error             BOOLEAN NOT NULL DEFAULT FALSE,
    error_reason         TEXT,
    UNIQUE (trial_id, subject_id),
    UNIQUE (trial_id, randomisation_number),
    UNIQUE (trial_id, stream_key, position)
);
CREATE INDEX allocations_by_site ON allocations (trial_id, site_id, sequence);
CREATE INDEX allocations_by_stratum ON allocations (trial_id, stratum);

CREATE TABLE allocation_lists (
    trial_id TEXT NOT NULL REFERENCES trials (trial_id),
    stratum  TEXT NOT NULL,
    position BIGINT NOT NULL,
    arm      TEXT NOT NULL,
    PRIMARY KEY (trial_id, stratum, position)
);

-- Details are kept as the exact text that was hashed, not jsonb, which
-- would reorder keys and renormalise numbers.
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    role      TEXT NOT NULL,
    action    TEXT NOT NULL,
    entity    TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- One row: the chain's head. Appenders lock it, so the chain stays linear
-- across replicas.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION equipoise_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('audit_log is append-only');
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('audit_log is append-only');

CREATE TRIGGER trial_versions_append_only BEFORE UPDATE OR DELETE ON trial_versions
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('trial_versions is append-only');

CREATE TRIGGER allocations_no_delete BEFORE DELETE ON allocations
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('allocations are never deleted');
CREATE TRIGGER allocations_no_truncate BEFORE TRUNCATE ON allocations
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('allocations are never deleted');
CREATE TRIGGER allocations_assignment_frozen
BEFORE UPDATE OF trial_id, subject_id, site_id, stratum, stream_key, position, arm,
                 randomisation_number, request_sha256, covariates_json, decision_json,
                 trial_version, randomised_at ON allocations
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('an allocation''s assignment is immutable');
CREATE TRIGGER allocations_error_is_final BEFORE UPDATE OF in_error ON allocations
FOR EACH ROW WHEN (OLD.in_error) EXECUTE FUNCTION equipoise_refuse('a randomised-in-error mark is final');
