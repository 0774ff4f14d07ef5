-- Pseudonymous ledger subjects (src/metering/subject.rs): every event's subject is stored
-- as a keyed hash of the id (`ps1_...`), never the id; so is a `smart.launch`'s patient.
-- Rows written before this migration hold the ids themselves: `subject_form` says which
-- (0: as sent, 1: pseudonyms). The gateway converts form-0 rows at start, in batches,
-- before it serves (it needs the master key, which SQL does not have), and the purge job
-- sweeps any an older instance wrote since.
ALTER TABLE usage_events ADD COLUMN subject_form SMALLINT NOT NULL DEFAULT 0;
-- Subject-less rows have nothing to convert (but a `smart.launch`'s patient id in `data`).
UPDATE usage_events SET subject_form = 1 WHERE subject IS NULL AND type <> 'smart.launch';
-- Finds the rows still to convert; empty once they are.
CREATE INDEX usage_events_raw_subjects ON usage_events (seq) WHERE subject_form = 0;
