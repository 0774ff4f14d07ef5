-- A score can end 'unknown': the LMS refused a resend of it, an earlier attempt may have
-- stored it, and the LMS offers no way to read back what it holds. SQLite cannot alter a
-- CHECK constraint: the table is rebuilt (nothing references it).
CREATE TABLE lti_scores_new (
    id             TEXT PRIMARY KEY,
    launch_id      TEXT NOT NULL REFERENCES launches (id),
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    series         TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    user_id        TEXT NOT NULL,
    score          TEXT NOT NULL,
    timestamp_us   INTEGER NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'unknown')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    line_item      TEXT,
    last_status    INTEGER,
    last_error     TEXT,
    created_at_us  INTEGER NOT NULL,
    delivered_at_us INTEGER,
    UNIQUE (series, seq)
);
INSERT INTO lti_scores_new (id, launch_id, partner_id, series, seq, user_id, score, timestamp_us,
                            status, attempts, line_item, last_status, last_error, created_at_us,
                            delivered_at_us)
SELECT id, launch_id, partner_id, series, seq, user_id, score, timestamp_us, status, attempts,
       line_item, last_status, last_error, created_at_us, delivered_at_us
FROM lti_scores;
DROP TABLE lti_scores;
ALTER TABLE lti_scores_new RENAME TO lti_scores;
CREATE INDEX lti_scores_launch ON lti_scores (launch_id, created_at_us);
