-- SAML service provider (src/sso/saml.rs). The gateway's SP key pairs: the private key
-- sealed under the master key, the self-signed certificate published in SP metadata for
-- the IdP to check AuthnRequest signatures and to encrypt assertions to.
CREATE TABLE sso_sp_keys (
    kid                TEXT PRIMARY KEY,
    sealed_private_key BYTEA NOT NULL,
    cert_der           BYTEA NOT NULL,
    created_at_us      BIGINT NOT NULL,
    retire_at_us       BIGINT
);
-- Assertion ids already used, so a captured response signs nobody in twice; kept until
-- the assertion would have expired anyway.
CREATE TABLE sso_saml_assertions (
    issuer         TEXT NOT NULL,
    assertion_id   TEXT NOT NULL,
    connection_id  TEXT NOT NULL,
    used_at_us     BIGINT NOT NULL,
    expires_at_us  BIGINT NOT NULL,
    PRIMARY KEY (issuer, assertion_id)
);
CREATE INDEX sso_saml_assertions_expiry ON sso_saml_assertions (expires_at_us);
-- Connections created at runtime (POST /v1/sso/connections), beside those in config. The
-- definition (which may hold a client secret) is sealed under the master key; domains are
-- a table of their own so home-realm discovery is one indexed lookup and a domain routes
-- to one connection only.
CREATE TABLE sso_connections (
    id                 TEXT PRIMARY KEY,
    partner_id         TEXT NOT NULL REFERENCES partners (id),
    protocol           TEXT NOT NULL CHECK (protocol IN ('oidc', 'saml')),
    sealed_definition  BYTEA NOT NULL,
    created_at_us      BIGINT NOT NULL
);
CREATE TABLE sso_connection_domains (
    domain         TEXT PRIMARY KEY,
    connection_id  TEXT NOT NULL REFERENCES sso_connections (id) ON DELETE CASCADE
);
