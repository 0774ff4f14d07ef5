-- LTI Dynamic Registration links: an admin creates one for a partner and gives its URL to
-- the LMS's administrator; `/lti/register` does nothing without an unspent, unexpired,
-- unrevoked one. Only the SHA-256 of the URL's secret is kept. Spent by one conditional
-- UPDATE in the transaction that stores the registration.
CREATE TABLE lti_registration_links (
    id               TEXT PRIMARY KEY,
    token_hash       TEXT NOT NULL UNIQUE,
    partner_id       TEXT NOT NULL REFERENCES partners (id),
    note             TEXT,
    -- The API key id that made it, or "cli".
    created_by       TEXT NOT NULL,
    created_at_us    INTEGER NOT NULL,
    expires_at_us    INTEGER NOT NULL,
    used_at_us       INTEGER,
    -- The registration (lti_platforms.id) it made.
    registration_id  TEXT,
    revoked_at_us    INTEGER,
    -- Registrations tried with it that failed once the LMS was contacted; the last reason.
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_error_at_us INTEGER
);
CREATE INDEX lti_registration_links_created ON lti_registration_links (created_at_us);

-- The link a dynamic registration came through (NULL for registrations made before links).
ALTER TABLE lti_platforms ADD COLUMN link_id TEXT;
