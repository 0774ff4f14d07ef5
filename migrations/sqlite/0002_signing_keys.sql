-- The gateway's own signing keys (src/keys). Private keys are sealed with AES-256-GCM under
-- the master key; retire_at_us is set when a rotation replaces the key: it is published
-- until then and signs nothing more.
CREATE TABLE signing_keys (
    kid                TEXT PRIMARY KEY,
    alg                TEXT NOT NULL CHECK (alg IN ('RS384', 'ES384')),
    sealed_private_key BLOB NOT NULL,
    public_jwk         TEXT NOT NULL,
    created_at_us      INTEGER NOT NULL,
    retire_at_us       INTEGER
);
CREATE INDEX signing_keys_alg ON signing_keys (alg, retire_at_us);
