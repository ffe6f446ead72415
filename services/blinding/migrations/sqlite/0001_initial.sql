-- Blinding service schema, version 1 (SQLite): treatment codes, their
-- assignment to allocations, every reveal of an arm, the notification
-- outbox, the treatment given per period, and the audit trail.
--
-- Amended in place rather than by a 0002: this schema was never deployed
-- (reveals, notifications, period records, the definition snapshot and the
-- assignment's site were added before the first release).

-- A trial whose pools are stored. Pools are stored once per trial; every
-- write about a trial reads this row first (on PostgreSQL, locks it).
-- It keeps a snapshot of the trial definition, refreshed (to a higher
-- version only) whenever a newer one is fetched, so reveals still work while
-- the randomisation service is unreachable.
CREATE TABLE code_trials (
    trial_id           TEXT PRIMARY KEY,
    pools_stored_at    TEXT NOT NULL,
    definition_version INTEGER NOT NULL CHECK (definition_version >= 1),
    definition_yaml    TEXT NOT NULL
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
    site_id     TEXT NOT NULL,
    arm_id      TEXT NOT NULL,
    code        TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (trial_id, subject_id),
    UNIQUE (trial_id, code),
    FOREIGN KEY (trial_id, code, arm_id) REFERENCES treatment_codes (trial_id, code, arm_id)
);

-- One row per reveal of an arm: the unblinded side record of its audit
-- record (DESIGN §8), whose details carry this row's sha256, never the arm.
-- Keyed by that audit record's seq.
CREATE TABLE reveals (
    audit_seq       INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL
        CHECK (kind IN ('emergency', 'safety', 'planned_period', 'preparation')),
    trial_id        TEXT NOT NULL,
    subject_id      TEXT NOT NULL,
    site_id         TEXT NOT NULL,
    arm_id          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    role            TEXT NOT NULL,
    reason_category TEXT,
    reason          TEXT,
    case_id         TEXT,
    period_id       TEXT,
    -- An emergency reveal under `after_emergency_unblinding: withdraw`.
    withdraws       INTEGER NOT NULL CHECK (withdraws IN (0, 1)),
    at              TEXT NOT NULL,
    -- 32 random bytes (hex) hashed with the row, so its sha256 in the
    -- audit record cannot be recomputed for each arm to find the one
    -- revealed. Never in the chained details.
    salt            TEXT NOT NULL CHECK (length(salt) = 64)
);
CREATE INDEX reveals_by_subject ON reveals (trial_id, subject_id);

-- The notification outbox: one row per emergency unblinding, safety review
-- and planned reveal, never an arm. The cursor is the seq of the reveal's
-- audit record, so cursors increase in commit order on both backends.
CREATE TABLE unblinding_notifications (
    cursor          INTEGER PRIMARY KEY REFERENCES reveals (audit_seq),
    trial_id        TEXT NOT NULL,
    site_id         TEXT NOT NULL,
    subject_id      TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('emergency', 'safety', 'planned_period')),
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    role            TEXT NOT NULL,
    reason_category TEXT
);
CREATE INDEX unblinding_notifications_by_trial ON unblinding_notifications (trial_id, cursor);

-- The treatment given in one period of one subject: once per period.
CREATE TABLE period_records (
    trial_id        TEXT NOT NULL,
    subject_id      TEXT NOT NULL,
    period_id       TEXT NOT NULL,
    assigned_arm_id TEXT NOT NULL,
    given_arm_id    TEXT NOT NULL,
    deviation       INTEGER NOT NULL CHECK (deviation IN (0, 1)),
    note            TEXT NOT NULL,
    actor           TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    audit_seq       INTEGER NOT NULL,
    -- As in reveals: keeps the record's sha256 from revealing its arms.
    salt            TEXT NOT NULL CHECK (length(salt) = 64),
    PRIMARY KEY (trial_id, subject_id, period_id)
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
-- Only the definition snapshot moves, and only to a higher version.
CREATE TRIGGER code_trials_no_update BEFORE UPDATE ON code_trials
WHEN NEW.trial_id IS NOT OLD.trial_id OR NEW.pools_stored_at IS NOT OLD.pools_stored_at
BEGIN SELECT RAISE(ABORT, 'a trial''s pools are never replaced'); END;
CREATE TRIGGER code_trials_snapshot_forward BEFORE UPDATE OF definition_version, definition_yaml ON code_trials
WHEN NEW.definition_version <= OLD.definition_version
BEGIN SELECT RAISE(ABORT, 'a definition snapshot only moves to a higher version'); END;
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
-- Reveals, notifications and period records are append-only.
CREATE TRIGGER reveals_no_update BEFORE UPDATE ON reveals
BEGIN SELECT RAISE(ABORT, 'reveals are append-only'); END;
CREATE TRIGGER reveals_no_delete BEFORE DELETE ON reveals
BEGIN SELECT RAISE(ABORT, 'reveals are append-only'); END;
CREATE TRIGGER unblinding_notifications_no_update BEFORE UPDATE ON unblinding_notifications
BEGIN SELECT RAISE(ABORT, 'notifications are append-only'); END;
CREATE TRIGGER unblinding_notifications_no_delete BEFORE DELETE ON unblinding_notifications
BEGIN SELECT RAISE(ABORT, 'notifications are append-only'); END;
CREATE TRIGGER period_records_no_update BEFORE UPDATE ON period_records
BEGIN SELECT RAISE(ABORT, 'period records are append-only'); END;
CREATE TRIGGER period_records_no_delete BEFORE DELETE ON period_records
BEGIN SELECT RAISE(ABORT, 'period records are append-only'); END;
