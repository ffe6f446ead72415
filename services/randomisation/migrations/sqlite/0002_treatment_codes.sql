-- Treatment codes from the blinding service (DESIGN §4 step 7). A code is
-- recorded after its allocation commits, so an allocation may have none for
-- a while; the reconciler and a retried Randomise complete it. The code
-- never encodes the arm; the mapping stays in the blinding service.

CREATE TABLE allocation_codes (
    trial_id    TEXT NOT NULL,
    subject_id  TEXT NOT NULL,
    code        TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (trial_id, subject_id),
    FOREIGN KEY (trial_id, subject_id) REFERENCES allocations (trial_id, subject_id),
    UNIQUE (trial_id, code)
);

CREATE TRIGGER allocation_codes_no_update BEFORE UPDATE ON allocation_codes
BEGIN SELECT RAISE(ABORT, 'a treatment code is immutable'); END;
CREATE TRIGGER allocation_codes_no_delete BEFORE DELETE ON allocation_codes
BEGIN SELECT RAISE(ABORT, 'a treatment code is immutable'); END;
