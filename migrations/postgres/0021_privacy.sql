-- Privacy (PRIVACY.md): retention and erasure.
--
-- A launch whose personal fields (user id and name, the context) were removed, by the
-- purge after `privacy.retention.launch_days` or by an erasure: the row stays for what
-- refers to it (scores, handoffs, the ledger's launch ids).
ALTER TABLE launches ADD COLUMN personal_purged_at_us BIGINT;
CREATE INDEX launches_personal_expiry ON launches (expires_at_us) WHERE personal_purged_at_us IS NULL;

-- Who exported or erased whose data, when, and from where. A person is named by a keyed
-- hash of the id asked about (`subject_ref`), never the id, so the log can prove a request
-- was answered without keeping what was erased.
CREATE TABLE audit_log (
    id            TEXT PRIMARY KEY,
    at_us         BIGINT NOT NULL,
    -- An API key id, or 'cli'.
    actor         TEXT NOT NULL,
    actor_role    TEXT NOT NULL,
    actor_partner TEXT,
    -- 'privacy.export', 'privacy.erase'
    action        TEXT NOT NULL,
    partner_id    TEXT,
    subject_ref   TEXT,
    -- 'api <request id>' or 'cli <host>'
    origin        TEXT NOT NULL,
    -- What was found or done, as JSON (counts and record ids; no personal fields).
    detail        TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_us);

-- What the purge looks rows up by.
CREATE INDEX lti_scores_created ON lti_scores (created_at_us);
CREATE INDEX jobs_finished ON jobs (finished_at_us) WHERE finished_at_us IS NOT NULL;
CREATE INDEX lti_person_links_launched ON lti_person_links (launched_at_us);
CREATE INDEX lti_identities_created ON lti_identities (created_at_us);
CREATE INDEX lti_scores_partner_user ON lti_scores (partner_id, user_id);
CREATE INDEX launches_partner_user ON launches (partner_id, user_id);
