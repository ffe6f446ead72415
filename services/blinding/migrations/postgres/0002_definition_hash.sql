-- The canonical hash of the stored definition snapshot, recorded with it:
-- the snapshot serves reveals while randomisation is unreachable, so a
-- snapshot edited in the table is refused on load rather than obeyed.
-- Empty for snapshots stored before this column existed.
ALTER TABLE code_trials ADD COLUMN definition_sha256 TEXT NOT NULL DEFAULT '';
