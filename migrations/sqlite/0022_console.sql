-- The console (issue 23): server-side sessions, so any instance serves any request, and
-- single-use sign-in links (invitations for partner users, break-glass links for admins).

-- A signed-in browser. The cookie holds a random secret; only its SHA-256 is stored, so the
-- table cannot be replayed into sessions.
CREATE TABLE console_sessions (
    id_hash          TEXT PRIMARY KEY,
    -- Stable across sign-ins, for "sign out everywhere": `sso:{connection}:{subject}` or
    -- `email:{partner or staff}:{email}`.
    person           TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    email            TEXT,
    role             TEXT NOT NULL,
    -- Set for partner roles: the one partner this session may see.
    partner_id       TEXT,
    -- How it signed in: `sso {connection}`, `invitation {id}`, `link {id}`.
    via              TEXT NOT NULL,
    -- The CSRF token of every form this session posts.
    csrf             TEXT NOT NULL,
    created_at_us    BIGINT NOT NULL,
    last_seen_at_us  BIGINT NOT NULL,
    -- The absolute timeout; the idle one is last_seen + console.idle_timeout_secs.
    expires_at_us    BIGINT NOT NULL,
    ended_at_us      BIGINT
);
CREATE INDEX console_sessions_person ON console_sessions (person);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at_us);

-- A single-use sign-in link. Only the token's SHA-256 is stored: the link is shown once.
CREATE TABLE console_links (
    id              TEXT PRIMARY KEY,
    token_hash      TEXT NOT NULL UNIQUE,
    -- 'invitation' (a partner user, 72 h) or 'break-glass' (an admin's first sign-in).
    kind            TEXT NOT NULL,
    role            TEXT NOT NULL,
    partner_id      TEXT,
    email           TEXT,
    created_by      TEXT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    expires_at_us   BIGINT NOT NULL,
    used_at_us      BIGINT,
    revoked_at_us   BIGINT
);
CREATE INDEX console_links_partner ON console_links (partner_id, created_at_us);
