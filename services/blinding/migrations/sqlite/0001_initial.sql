-- Blinding service schema, version 1 (SQLite): treatment codes, their
-- assignment to allocations, and the audit trail.

-- A trial whose pools are stored. Pools are stored once per trial; every
-- write about a trial reads this row first (on PostgreSQL, locks it).
CREATE TABLE code_trials (
    trial_id        TEXT PRIMARY KEY,
    pools_stored_at TEXT NOT NULL
);

-- One pool per trial and arm, with how many of its codes were issued:
-- codes are issued in position order, so the next code is at `issued`.
CREATE TABLE code_pools (
    trial_id TEXT NOT NULL REFERENCES code_trials (trial_id),
    arm_id   TEXT NOT NULL,
    issued   INTEGER NOT NULL DEFAULT 0 CHECK (issued >= 0),
    PRIMARY KEY (trial_id, arm_id)
);

-- Which code belongs to which arm is the blind.
CREATE TABLE treatment_codes (
    trial_id TEXT NOT NULL,
    arm_id   TEXT NOT NULL,
    position INTEGER NOT NULL CHECK (position >= 0),
    code     TEXT NOT NULL,
    source   TEXT NOT NULL CHECK (source IN ('generated', 'uploaded')),
    PRIMARY KEY (trial_id, code),
    UNIQUE (trial_id, arm_id, position),
    -- What an assignment's foreign key names, so its arm is the code's arm.
    UNIQUE (trial_id, code, arm_id),
    FOREIGN KEY (trial_id, arm_id) REFERENCES code_pools (trial_id, arm_id)
);

-- One code per allocation, an allocation being (trial, subject): the
-- randomisation service's key for it, never reused or deleted there.
CREATE TABLE code_assignments (
    trial_id    TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    arm_id      TEXT NOT NULL,
    code        TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (trial_id, subject_id),
    UNIQUE (trial_id, code),
    FOREIGN KEY (trial_id, code, arm_id) REFERENCES treatment_codes (trial_id, code, arm_id)
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

-- Pools are never replaced: a trial's record, its pools and its codes stay.
CREATE TRIGGER code_trials_no_update BEFORE UPDATE ON code_trials
BEGIN SELECT RAISE(ABORT, 'a trial''s pools are never replaced'); END;
CREATE TRIGGER code_trials_no_delete BEFORE DELETE ON code_trials
BEGIN SELECT RAISE(ABORT, 'a trial''s pools are never replaced'); END;
CREATE TRIGGER code_pools_no_delete BEFORE DELETE ON code_pools
BEGIN SELECT RAISE(ABORT, 'code pools are never deleted'); END;
CREATE TRIGGER code_pools_frozen BEFORE UPDATE OF trial_id, arm_id ON code_pools
BEGIN SELECT RAISE(ABORT, 'a code pool''s arm is immutable'); END;
-- Issuing moves one code at a time, forward only.
CREATE TRIGGER code_pools_issue_forward BEFORE UPDATE OF issued ON code_pools
WHEN NEW.issued <> OLD.issued + 1
BEGIN SELECT RAISE(ABORT, 'codes are issued one at a time, never returned'); END;
CREATE TRIGGER treatment_codes_no_update BEFORE UPDATE ON treatment_codes
BEGIN SELECT RAISE(ABORT, 'a treatment code''s arm is immutable'); END;
CREATE TRIGGER treatment_codes_no_delete BEFORE DELETE ON treatment_codes
BEGIN SELECT RAISE(ABORT, 'treatment codes are never deleted'); END;
CREATE TRIGGER code_assignments_no_update BEFORE UPDATE ON code_assignments
BEGIN SELECT RAISE(ABORT, 'a code assignment is immutable'); END;
CREATE TRIGGER code_assignments_no_delete BEFORE DELETE ON code_assignments
BEGIN SELECT RAISE(ABORT, 'a code assignment is immutable'); END;
