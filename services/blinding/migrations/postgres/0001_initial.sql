-- Blinding service schema, version 1 (PostgreSQL): treatment codes, their
-- assignment to allocations, every reveal of an arm, the notification
-- outbox, the treatment given per period, and the audit trail.
--
-- Amended in place rather than by a 0002: this schema was never deployed
-- (reveals, notifications, period records, the definition snapshot and the
-- assignment's site were added before the first release).

-- A trial whose pools are stored. Every write about a trial locks this row
-- first (`FOR UPDATE`), and the audit head last.
-- It keeps a snapshot of the trial definition, refreshed (to a higher
-- version only) whenever a newer one is fetched, so reveals still work while
-- the randomisation service is unreachable.
CREATE TABLE code_trials (
    trial_id           TEXT PRIMARY KEY,
    pools_stored_at    TEXT NOT NULL,
    definition_version BIGINT NOT NULL CHECK (definition_version >= 1),
    definition_yaml    TEXT NOT NULL
);

-- One pool per trial and arm; codes are issued in position order, so the
-- next code is at `issued`.
CREATE TABLE code_pools (
    trial_id TEXT NOT NULL REFERENCES code_trials (trial_id),
    arm_id   TEXT NOT NULL,
    issued   BIGINT NOT NULL DEFAULT 0 CHECK (issued >= 0),
    PRIMARY KEY (trial_id, arm_id)
);

-- Which code belongs to which arm is the blind.
CREATE TABLE treatment_codes (
    trial_id TEXT NOT NULL,
    arm_id   TEXT NOT NULL,
    position BIGINT NOT NULL CHECK (position >= 0),
    code     TEXT NOT NULL,
    source   TEXT NOT NULL CHECK (source IN ('generated', 'uploaded')),
    PRIMARY KEY (trial_id, code),
    UNIQUE (trial_id, arm_id, position),
    UNIQUE (trial_id, code, arm_id),
    FOREIGN KEY (trial_id, arm_id) REFERENCES code_pools (trial_id, arm_id)
);

-- One code per allocation, an allocation being (trial, subject).
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

-- Details are kept as the exact text that was hashed, not jsonb.
-- One row per reveal of an arm: the unblinded side record of its audit
-- record (DESIGN §8), whose details carry this row's sha256, never the arm.
-- Keyed by that audit record's seq.
CREATE TABLE reveals (
    audit_seq       BIGINT PRIMARY KEY,
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
    withdraws       BOOLEAN NOT NULL,
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
    cursor          BIGINT PRIMARY KEY REFERENCES reveals (audit_seq),
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
    deviation       BOOLEAN NOT NULL,
    note            TEXT NOT NULL,
    actor           TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    audit_seq       BIGINT NOT NULL,
    -- As in reveals: keeps the record's sha256 from revealing its arms.
    salt            TEXT NOT NULL CHECK (length(salt) = 64),
    PRIMARY KEY (trial_id, subject_id, period_id)
);

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

CREATE TRIGGER code_trials_no_delete BEFORE DELETE ON code_trials
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('a trial''s pools are never replaced');
-- Only the definition snapshot moves, and only to a higher version.
CREATE TRIGGER code_trials_frozen BEFORE UPDATE ON code_trials
FOR EACH ROW WHEN (NEW.trial_id IS DISTINCT FROM OLD.trial_id
                   OR NEW.pools_stored_at IS DISTINCT FROM OLD.pools_stored_at)
EXECUTE FUNCTION equipoise_refuse('a trial''s pools are never replaced');
CREATE TRIGGER code_trials_snapshot_forward BEFORE UPDATE ON code_trials
FOR EACH ROW WHEN (NEW.definition_version <= OLD.definition_version)
EXECUTE FUNCTION equipoise_refuse('a definition snapshot only moves to a higher version');
CREATE TRIGGER code_pools_no_delete BEFORE DELETE ON code_pools
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('code pools are never deleted');
CREATE TRIGGER code_pools_frozen BEFORE UPDATE OF trial_id, arm_id ON code_pools
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('a code pool''s arm is immutable');
CREATE TRIGGER code_pools_issue_forward BEFORE UPDATE OF issued ON code_pools
FOR EACH ROW WHEN (NEW.issued <> OLD.issued + 1)
EXECUTE FUNCTION equipoise_refuse('codes are issued one at a time, never returned');
CREATE TRIGGER treatment_codes_frozen BEFORE UPDATE ON treatment_codes
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('a treatment code''s arm is immutable');
CREATE TRIGGER treatment_codes_no_delete BEFORE DELETE ON treatment_codes
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('treatment codes are never deleted');
CREATE TRIGGER code_assignments_frozen BEFORE UPDATE OR DELETE ON code_assignments
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('a code assignment is immutable');
-- Truncation skips row triggers: refuse it on every table holding the blind.
CREATE TRIGGER code_trials_no_truncate BEFORE TRUNCATE ON code_trials
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('a trial''s pools are never replaced');
CREATE TRIGGER code_pools_no_truncate BEFORE TRUNCATE ON code_pools
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('code pools are never deleted');
CREATE TRIGGER treatment_codes_no_truncate BEFORE TRUNCATE ON treatment_codes
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('treatment codes are never deleted');
CREATE TRIGGER code_assignments_no_truncate BEFORE TRUNCATE ON code_assignments
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('a code assignment is immutable');
-- Reveals, notifications and period records are append-only.
CREATE TRIGGER reveals_append_only BEFORE UPDATE OR DELETE ON reveals
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('reveals are append-only');
CREATE TRIGGER reveals_no_truncate BEFORE TRUNCATE ON reveals
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('reveals are append-only');
CREATE TRIGGER unblinding_notifications_append_only BEFORE UPDATE OR DELETE ON unblinding_notifications
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('notifications are append-only');
CREATE TRIGGER unblinding_notifications_no_truncate BEFORE TRUNCATE ON unblinding_notifications
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('notifications are append-only');
CREATE TRIGGER period_records_append_only BEFORE UPDATE OR DELETE ON period_records
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('period records are append-only');
CREATE TRIGGER period_records_no_truncate BEFORE TRUNCATE ON period_records
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('period records are append-only');
