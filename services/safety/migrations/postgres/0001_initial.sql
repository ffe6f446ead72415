-- Safety service schema, version 1 (PostgreSQL): as migrations/sqlite,
-- with the audit head row and TRUNCATE refused.

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

CREATE TABLE case_versions (
    case_id     TEXT NOT NULL REFERENCES cases (case_id),
    version     BIGINT NOT NULL CHECK (version >= 1),
    report_json TEXT NOT NULL,
    received_at TEXT NOT NULL,
    late        BOOLEAN NOT NULL,
    expected    BOOLEAN NOT NULL,
    rsi_version TEXT NOT NULL,
    PRIMARY KEY (case_id, version)
);

CREATE TABLE sponsor_assessments (
    case_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    causality TEXT NOT NULL CHECK (causality IN ('related', 'not_related')),
    comment   TEXT NOT NULL,
    by_actor  TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (case_id, version),
    FOREIGN KEY (case_id, version) REFERENCES case_versions (case_id, version)
);

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

CREATE TABLE sealed_records (
    audit_seq BIGINT PRIMARY KEY,
    content   TEXT NOT NULL,
    salt      TEXT NOT NULL CHECK (length(salt) = 64)
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

CREATE TRIGGER cases_no_delete BEFORE DELETE ON cases
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('cases are never deleted');
CREATE TRIGGER cases_no_truncate BEFORE TRUNCATE ON cases
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('cases are never deleted');
CREATE TRIGGER cases_identity_frozen BEFORE UPDATE ON cases
FOR EACH ROW WHEN (NEW.case_id IS DISTINCT FROM OLD.case_id
    OR NEW.trial_id IS DISTINCT FROM OLD.trial_id OR NEW.site_id IS DISTINCT FROM OLD.site_id
    OR NEW.subject_id IS DISTINCT FROM OLD.subject_id
    OR NEW.first_received_at IS DISTINCT FROM OLD.first_received_at
    OR NEW.sponsor_time_zone IS DISTINCT FROM OLD.sponsor_time_zone)
EXECUTE FUNCTION equipoise_refuse('a case''s identity is immutable');
CREATE TRIGGER cases_classification_final BEFORE UPDATE ON cases
FOR EACH ROW WHEN (OLD.classification IN ('susar', 'not_reportable'))
EXECUTE FUNCTION equipoise_refuse('a settled classification is final');

CREATE TRIGGER case_versions_append_only BEFORE UPDATE OR DELETE ON case_versions
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('case versions are never overwritten');
CREATE TRIGGER case_versions_no_truncate BEFORE TRUNCATE ON case_versions
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('case versions are never overwritten');
CREATE TRIGGER sponsor_assessments_append_only BEFORE UPDATE OR DELETE ON sponsor_assessments
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('assessments are append-only');
CREATE TRIGGER sponsor_assessments_no_truncate BEFORE TRUNCATE ON sponsor_assessments
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('assessments are append-only');

CREATE TRIGGER obligations_no_delete BEFORE DELETE ON obligations
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('obligations are never deleted');
CREATE TRIGGER obligations_no_truncate BEFORE TRUNCATE ON obligations
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('obligations are never deleted');
CREATE TRIGGER obligations_close_once BEFORE UPDATE ON obligations
FOR EACH ROW WHEN (OLD.submitted_at IS NOT NULL
    OR NEW.obligation_id IS DISTINCT FROM OLD.obligation_id
    OR NEW.case_id IS DISTINCT FROM OLD.case_id OR NEW.trial_id IS DISTINCT FROM OLD.trial_id
    OR NEW.kind IS DISTINCT FROM OLD.kind OR NEW.due_date IS DISTINCT FROM OLD.due_date
    OR NEW.due_at IS DISTINCT FROM OLD.due_at OR NEW.submitted_at IS NULL)
EXECUTE FUNCTION equipoise_refuse('an obligation is closed once, by its submission');

CREATE TRIGGER sealed_records_append_only BEFORE UPDATE OR DELETE ON sealed_records
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('sealed records are append-only');
CREATE TRIGGER sealed_records_no_truncate BEFORE TRUNCATE ON sealed_records
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('sealed records are append-only');
