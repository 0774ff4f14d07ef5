-- The launch model shared by SMART, LTI and SSO, and the SMART client's server-side state.

CREATE TABLE launches (
    id            TEXT PRIMARY KEY,
    partner_id    TEXT NOT NULL REFERENCES partners (id),
    kind          TEXT NOT NULL CHECK (kind IN ('smart', 'lti', 'sso')),
    user_id       TEXT,
    user_name     TEXT,
    -- Kind-specific context as JSON text (patient, encounter, course, roles...).
    context       TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL
);
CREATE INDEX launches_partner_created ON launches (partner_id, created_at_us);

-- One-time codes handed to the app; only their SHA-256 is kept.
CREATE TABLE launch_handoffs (
    code_hash     TEXT PRIMARY KEY,
    launch_id     TEXT NOT NULL REFERENCES launches (id),
    expires_at_us BIGINT NOT NULL,
    used_at_us    BIGINT
);
CREATE INDEX launch_handoffs_expiry ON launch_handoffs (expires_at_us);

-- Authorization requests in flight: keyed by the SHA-256 of `state`, single use.
CREATE TABLE smart_states (
    state_hash      TEXT PRIMARY KEY,
    partner_id      TEXT NOT NULL REFERENCES partners (id),
    iss             TEXT NOT NULL,
    launch_param    TEXT,
    -- The PKCE verifier, sealed under the master key.
    sealed_verifier BYTEA NOT NULL,
    scope           TEXT NOT NULL,
    created_at_us   BIGINT NOT NULL,
    expires_at_us   BIGINT NOT NULL,
    used_at_us      BIGINT
);
CREATE INDEX smart_states_expiry ON smart_states (expires_at_us);

-- The tokens of a SMART launch, sealed under the master key; never returned by the API.
CREATE TABLE smart_sessions (
    launch_id              TEXT PRIMARY KEY REFERENCES launches (id),
    partner_id             TEXT NOT NULL REFERENCES partners (id),
    iss                    TEXT NOT NULL,
    token_endpoint         TEXT NOT NULL,
    sealed_access_token    BYTEA NOT NULL,
    sealed_refresh_token   BYTEA,
    access_expires_at_us   BIGINT NOT NULL,
    -- The launch's own end: the row (and its tokens) is deleted after it.
    launch_expires_at_us   BIGINT NOT NULL,
    -- Bumped on every refresh; the sealed tokens' associated data includes it.
    token_version          BIGINT NOT NULL,
    -- Set while one instance refreshes, so another does not spend the same refresh token.
    refresh_lease_until_us BIGINT,
    updated_at_us          BIGINT NOT NULL
);
CREATE INDEX smart_sessions_launch_expiry ON smart_sessions (launch_expires_at_us);
