-- Cap counts as counter rows (issue 11, item 4): the commit reads three
-- rows by primary key instead of counting every allocation of the trial, so its
-- cost does not grow with the trial. scope is 'total' (member ''), 'site' or
-- 'stratum' ("randomised as", which never changes). A trigger keeps them,
-- so every insert counts, whichever binary made it (replicas still running
-- the previous binary during a rolling upgrade included); allocations are
-- never deleted and their site and stratum never change.

-- No allocation may commit between the backfill and the trigger: an insert
-- that the backfill's snapshot missed would never be counted.
LOCK TABLE allocations IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE allocation_counts (
    trial_id TEXT NOT NULL,
    scope    TEXT NOT NULL CHECK (scope IN ('total', 'site', 'stratum')),
    member   TEXT NOT NULL,
    count    BIGINT NOT NULL,
    PRIMARY KEY (trial_id, scope, member)
);

INSERT INTO allocation_counts (trial_id, scope, member, count)
SELECT trial_id, 'total', '', COUNT(*) FROM allocations GROUP BY trial_id;
INSERT INTO allocation_counts (trial_id, scope, member, count)
SELECT trial_id, 'site', site_id, COUNT(*) FROM allocations GROUP BY trial_id, site_id;
INSERT INTO allocation_counts (trial_id, scope, member, count)
SELECT trial_id, 'stratum', stratum, COUNT(*) FROM allocations GROUP BY trial_id, stratum;

CREATE FUNCTION equipoise_count_allocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO allocation_counts (trial_id, scope, member, count)
    VALUES (NEW.trial_id, 'total', '', 1), (NEW.trial_id, 'site', NEW.site_id, 1),
           (NEW.trial_id, 'stratum', NEW.stratum, 1)
    ON CONFLICT (trial_id, scope, member) DO UPDATE SET count = allocation_counts.count + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER allocations_counted AFTER INSERT ON allocations
FOR EACH ROW EXECUTE FUNCTION equipoise_count_allocation();

-- Counts change only through that trigger.
CREATE TRIGGER allocation_counts_no_delete BEFORE DELETE ON allocation_counts
FOR EACH ROW EXECUTE FUNCTION equipoise_refuse('allocation counts are never deleted');
CREATE TRIGGER allocation_counts_no_truncate BEFORE TRUNCATE ON allocation_counts
FOR EACH STATEMENT EXECUTE FUNCTION equipoise_refuse('allocation counts are never deleted');
