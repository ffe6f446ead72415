-- Randomisation service schema, version 1 (SQLite).

CREATE TABLE trials (
    trial_id          TEXT PRIMARY KEY,
    version           INTEGER NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('draft', 'active', 'closed')),
    definition_yaml   TEXT NOT NULL,
    definition_sha256 TEXT NOT NULL,
    algorithm_version INTEGER,
    sealed_seed       BLOB,
    registered_at     TEXT NOT NULL,
    activated_at      TEXT,
    closed_at         TEXT
);

-- Every frozen definition a trial has had, with the reason for each change.
CREATE TABLE trial_versions (
    trial_id          TEXT NOT NULL REFERENCES trials (trial_id),
    version           INTEGER NOT NULL,
    definition_yaml   TEXT NOT NULL,
    definition_sha256 TEXT NOT NULL,
    reason            TEXT NOT NULL,
    recorded_at       TEXT NOT NULL,
    PRIMARY KEY (trial_id, version)
);

-- The fencing authority: one version per stream (stratum, or the whole
-- trial for minimisation). A commit is a compare-and-set on it.
CREATE TABLE allocation_streams (
    trial_id   TEXT NOT NULL REFERENCES trials (trial_id),
    stream_key TEXT NOT NULL,
    version    INTEGER NOT NULL,
    PRIMARY KEY (trial_id, stream_key)
);

CREATE TABLE allocations (
    sequence             INTEGER PRIMARY KEY AUTOINCREMENT,
    trial_id             TEXT NOT NULL REFERENCES trials (trial_id),
    subject_id           TEXT NOT NULL,
    site_id              TEXT NOT NULL,
    stratum              TEXT NOT NULL,
    stream_key           TEXT NOT NULL,
    position             INTEGER NOT NULL,
    arm                  TEXT NOT NULL,
    randomisation_number TEXT NOT NULL,
    request_sha256       TEXT NOT NULL,
    covariates_json      TEXT NOT NULL,
    decision_json        TEXT NOT NULL,
    trial_version        INTEGER NOT NULL,
    randomised_at        TEXT NOT NULL,
    corrected_stratum    TEXT,
    correction_reason    TEXT,
    in_error             INTEGER NOT NULL DEFAULT 0,
    error_reason         TEXT,
    UNIQUE (trial_id, subject_id),
    UNIQUE (trial_id, randomisation_number),
    UNIQUE (trial_id, stream_key, position)
);
CREATE INDEX allocations_by_site ON allocations (trial_id, site_id, sequence);
-- Cap counts run inside the allocation transaction.
CREATE INDEX allocations_by_stratum ON allocations (trial_id, stratum);

CREATE TABLE allocation_lists (
    trial_id TEXT NOT NULL REFERENCES trials (trial_id),
    stratum  TEXT NOT NULL,
    position INTEGER NOT NULL,
    arm      TEXT NOT NULL,
    PRIMARY KEY (trial_id, stratum, position)
);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    role      TEXT NOT NULL,
    action    TEXT NOT NULL,
    entity    TEXT NOT NULL,
    details   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TRIGGER trial_versions_no_update BEFORE UPDATE ON trial_versions
BEGIN SELECT RAISE(ABORT, 'trial_versions is append-only'); END;
CREATE TRIGGER trial_versions_no_delete BEFORE DELETE ON trial_versions
BEGIN SELECT RAISE(ABORT, 'trial_versions is append-only'); END;

-- Errors are never fixed by re-randomising: the assignment itself is frozen,
-- and only the correction and in-error columns may change.
CREATE TRIGGER allocations_no_delete BEFORE DELETE ON allocations
BEGIN SELECT RAISE(ABORT, 'allocations are never deleted'); END;
CREATE TRIGGER allocations_assignment_frozen
BEFORE UPDATE OF trial_id, subject_id, site_id, stratum, stream_key, position, arm,
                 randomisation_number, request_sha256, covariates_json, decision_json,
                 trial_version, randomised_at ON allocations
BEGIN SELECT RAISE(ABORT, 'an allocation''s assignment is immutable'); END;
CREATE TRIGGER allocations_error_is_final BEFORE UPDATE OF in_error ON allocations
WHEN OLD.in_error = 1
BEGIN SELECT RAISE(ABORT, 'a randomised-in-error mark is final'); END;
