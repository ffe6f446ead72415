-- Safety service schema, version 1 (SQLite): SAE cases, their versions
-- (never changed), the sponsor's causality assessments, the regulatory
-- obligations, the sealed side records and the audit trail.

-- One row per case. Its identity never changes; its classification moves
-- between 'not_potential' and 'pending' until a safety reveal settles it
-- as 'susar' or 'not_reportable', after which it never changes again.
CREATE TABLE cases (
    case_id               TEXT PRIMARY KEY,
    trial_id              TEXT NOT NULL,
    site_id               TEXT NOT NULL,
    subject_id            TEXT NOT NULL,
    first_received_at     TEXT NOT NULL,
    day_zero              TEXT,
    classification        TEXT NOT NULL
        CHECK (classification IN ('not_potential', 'pending', 'susar', 'not_reportable')),
    not_reportable_reason TEXT,
    sponsor_time_zone     TEXT NOT NULL
);
CREATE INDEX cases_by_trial ON cases (trial_id, site_id);
CREATE INDEX cases_pending ON cases (classification);

-- Each version of a case as reported: never updated or deleted.
CREATE TABLE case_versions (
    case_id     TEXT NOT NULL REFERENCES cases (case_id),
    version     INTEGER NOT NULL CHECK (version >= 1),
    report_json TEXT NOT NULL,
    received_at TEXT NOT NULL,
    late        INTEGER NOT NULL CHECK (late IN (0, 1)),
    expected    INTEGER NOT NULL CHECK (expected IN (0, 1)),
    rsi_version TEXT NOT NULL,
    PRIMARY KEY (case_id, version)
);

-- The sponsor's causality assessment, apart from the investigator's: one
-- per version, never changed.
CREATE TABLE sponsor_assessments (
    case_id   TEXT NOT NULL,
    version   INTEGER NOT NULL,
    causality TEXT NOT NULL CHECK (causality IN ('related', 'not_related')),
    comment   TEXT NOT NULL,
    by_actor  TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (case_id, version),
    FOREIGN KEY (case_id, version) REFERENCES case_versions (case_id, version)
);

-- Regulatory obligations: one per (case, kind); a submission closes one,
-- once.
CREATE TABLE obligations (
    obligation_id      TEXT PRIMARY KEY,
    case_id            TEXT NOT NULL REFERENCES cases (case_id),
    trial_id           TEXT NOT NULL,
    kind               TEXT NOT NULL
        CHECK (kind IN ('initial_7_day', 'initial_15_day', 'follow_up_8_day')),
    due_date           TEXT NOT NULL,
    due_at             TEXT NOT NULL,
    submitted_at       TEXT,
    recipient          TEXT,
    acknowledgement_id TEXT,
    UNIQUE (case_id, kind)
);

-- The unblinded side record of an audit record whose details carry only
-- this content's salted sha256 (DESIGN §8): classifications, obligations
-- and submissions. Keyed by that audit record's seq.
CREATE TABLE sealed_records (
    audit_seq INTEGER PRIMARY KEY,
    content   TEXT NOT NULL,
    salt      TEXT NOT NULL CHECK (length(salt) = 64)
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

CREATE TRIGGER cases_no_delete BEFORE DELETE ON cases
BEGIN SELECT RAISE(ABORT, 'cases are never deleted'); END;
CREATE TRIGGER cases_identity_frozen BEFORE UPDATE ON cases
WHEN NEW.case_id IS NOT OLD.case_id OR NEW.trial_id IS NOT OLD.trial_id
  OR NEW.site_id IS NOT OLD.site_id OR NEW.subject_id IS NOT OLD.subject_id
  OR NEW.first_received_at IS NOT OLD.first_received_at
  OR NEW.sponsor_time_zone IS NOT OLD.sponsor_time_zone
BEGIN SELECT RAISE(ABORT, 'a case''s identity is immutable'); END;
CREATE TRIGGER cases_classification_final BEFORE UPDATE ON cases
WHEN OLD.classification IN ('susar', 'not_reportable')
BEGIN SELECT RAISE(ABORT, 'a settled classification is final'); END;

CREATE TRIGGER case_versions_no_update BEFORE UPDATE ON case_versions
BEGIN SELECT RAISE(ABORT, 'case versions are never overwritten'); END;
CREATE TRIGGER case_versions_no_delete BEFORE DELETE ON case_versions
BEGIN SELECT RAISE(ABORT, 'case versions are never overwritten'); END;
CREATE TRIGGER sponsor_assessments_no_update BEFORE UPDATE ON sponsor_assessments
BEGIN SELECT RAISE(ABORT, 'assessments are append-only'); END;
CREATE TRIGGER sponsor_assessments_no_delete BEFORE DELETE ON sponsor_assessments
BEGIN SELECT RAISE(ABORT, 'assessments are append-only'); END;

CREATE TRIGGER obligations_no_delete BEFORE DELETE ON obligations
BEGIN SELECT RAISE(ABORT, 'obligations are never deleted'); END;
-- Only a submission changes an obligation, once.
CREATE TRIGGER obligations_close_once BEFORE UPDATE ON obligations
WHEN OLD.submitted_at IS NOT NULL
  OR NEW.obligation_id IS NOT OLD.obligation_id OR NEW.case_id IS NOT OLD.case_id
  OR NEW.trial_id IS NOT OLD.trial_id OR NEW.kind IS NOT OLD.kind
  OR NEW.due_date IS NOT OLD.due_date OR NEW.due_at IS NOT OLD.due_at
  OR NEW.submitted_at IS NULL
BEGIN SELECT RAISE(ABORT, 'an obligation is closed once, by its submission'); END;

CREATE TRIGGER sealed_records_no_update BEFORE UPDATE ON sealed_records
BEGIN SELECT RAISE(ABORT, 'sealed records are append-only'); END;
CREATE TRIGGER sealed_records_no_delete BEFORE DELETE ON sealed_records
BEGIN SELECT RAISE(ABORT, 'sealed records are append-only'); END;
