-- SSO: authorization requests to an organisation's IdP waiting for their callback. The
-- state is stored as its SHA-256; nonce and PKCE verifier sealed under the master key.
CREATE TABLE sso_states (
    state_hash     TEXT PRIMARY KEY,
    connection_id  TEXT NOT NULL,
    partner_id     TEXT NOT NULL REFERENCES partners (id),
    sealed         BYTEA NOT NULL,
    created_at_us  BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL,
    used_at_us     BIGINT
);
CREATE INDEX sso_states_expiry ON sso_states (expires_at_us);
