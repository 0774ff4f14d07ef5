-- LTI tool state: login initiations in flight, dynamically registered platforms, Deep
-- Linking requests, scores waiting for delivery, and LTI 1.1 nonces.

-- Keyed by the SHA-256 of `state`; single use. binding_hash is the SHA-256 of the value of
-- the browser cookie (or platform storage entry) set at login.
CREATE TABLE lti_states (
    state_hash     TEXT PRIMARY KEY,
    binding_hash   TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    issuer         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    -- The login parameters, to reopen the launch in a new window when cookies are blocked.
    login          TEXT NOT NULL,
    storage_target TEXT,
    storage_origin TEXT,
    created_at_us  BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL,
    used_at_us     BIGINT
);
CREATE INDEX lti_states_expiry ON lti_states (expires_at_us);

-- Platforms registered through LTI Dynamic Registration (configured ones live in config).
CREATE TABLE lti_platforms (
    id             TEXT PRIMARY KEY,
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    issuer         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    deployment_id  TEXT NOT NULL,
    auth_url       TEXT NOT NULL,
    token_url      TEXT NOT NULL,
    jwks_url       TEXT NOT NULL,
    token_audience TEXT,
    vendor         TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    registration   TEXT NOT NULL,
    created_at_us  BIGINT NOT NULL,
    decided_at_us  BIGINT,
    UNIQUE (issuer, client_id, deployment_id)
);

-- A Deep Linking request waiting for the user's choice.
CREATE TABLE lti_deep_links (
    id             TEXT PRIMARY KEY,
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    issuer         TEXT NOT NULL,
    client_id      TEXT NOT NULL,
    deployment_id  TEXT NOT NULL,
    settings       TEXT NOT NULL,
    created_at_us  BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL,
    used_at_us     BIGINT
);

-- Scores the app posted, until the platform has them. seq orders the scores of one
-- (launch, line item, user) and timestamp_us is strictly increasing within it.
CREATE TABLE lti_scores (
    id             TEXT PRIMARY KEY,
    launch_id      TEXT NOT NULL REFERENCES launches (id),
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    series         TEXT NOT NULL,
    seq            BIGINT NOT NULL,
    user_id        TEXT NOT NULL,
    score          TEXT NOT NULL,
    timestamp_us   BIGINT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts       BIGINT NOT NULL DEFAULT 0,
    line_item      TEXT,
    last_status    BIGINT,
    last_error     TEXT,
    created_at_us  BIGINT NOT NULL,
    delivered_at_us BIGINT,
    UNIQUE (series, seq)
);
CREATE INDEX lti_scores_launch ON lti_scores (launch_id, created_at_us);

-- LTI 1.1 OAuth nonces, kept for the timestamp window.
CREATE TABLE lti11_nonces (
    consumer_key   TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    seen_at_us     BIGINT NOT NULL,
    PRIMARY KEY (consumer_key, nonce)
);
CREATE INDEX lti11_nonces_seen ON lti11_nonces (seen_at_us);
