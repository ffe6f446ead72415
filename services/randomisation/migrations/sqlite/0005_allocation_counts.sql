-- Cap counts as counter rows (issue 11, item 4): the commit reads three
-- rows by primary key instead of counting every allocation of the trial, so its
-- cost does not grow with the trial. scope is 'total' (member ''), 'site' or
-- 'stratum' ("randomised as", which never changes). A trigger keeps them,
-- so every insert counts, whichever binary made it; allocations are never
-- deleted and their site and stratum never change, so only inserts move them.

CREATE TABLE allocation_counts (
    trial_id TEXT NOT NULL,
    scope    TEXT NOT NULL CHECK (scope IN ('total', 'site', 'stratum')),
    member   TEXT NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (trial_id, scope, member)
) WITHOUT ROWID;

INSERT INTO allocation_counts (trial_id, scope, member, count)
SELECT trial_id, 'total', '', COUNT(*) FROM allocations GROUP BY trial_id;
INSERT INTO allocation_counts (trial_id, scope, member, count)
SELECT trial_id, 'site', site_id, COUNT(*) FROM allocations GROUP BY trial_id, site_id;
INSERT INTO allocation_counts (trial_id, scope, member, count)
SELECT trial_id, 'stratum', stratum, COUNT(*) FROM allocations GROUP BY trial_id, stratum;

CREATE TRIGGER allocations_counted AFTER INSERT ON allocations
BEGIN
    INSERT INTO allocation_counts (trial_id, scope, member, count)
    VALUES (NEW.trial_id, 'total', '', 1), (NEW.trial_id, 'site', NEW.site_id, 1),
           (NEW.trial_id, 'stratum', NEW.stratum, 1)
    ON CONFLICT (trial_id, scope, member) DO UPDATE SET count = count + 1;
END;

-- Counts change only through that trigger.
CREATE TRIGGER allocation_counts_no_delete BEFORE DELETE ON allocation_counts
BEGIN
    SELECT RAISE(ABORT, 'allocation counts are never deleted');
END;
