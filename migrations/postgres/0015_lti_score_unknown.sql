-- A score can end 'unknown': the LMS refused a resend of it, an earlier attempt may have
-- stored it, and the LMS offers no way to read back what it holds.
ALTER TABLE lti_scores DROP CONSTRAINT lti_scores_status_check;
ALTER TABLE lti_scores ADD CONSTRAINT lti_scores_status_check
    CHECK (status IN ('pending', 'delivered', 'failed', 'unknown'));
