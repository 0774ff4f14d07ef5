-- LTI 1.3 (IMS Security Framework) signs with RS256: allow it beside RS384 and ES384.
-- SQLite cannot alter a CHECK constraint, so the table is rebuilt.
CREATE TABLE signing_keys_new (
    kid                TEXT PRIMARY KEY,
    alg                TEXT NOT NULL CHECK (alg IN ('RS256', 'RS384', 'ES384')),
    sealed_private_key BLOB NOT NULL,
    public_jwk         TEXT NOT NULL,
    created_at_us      INTEGER NOT NULL,
    retire_at_us       INTEGER
);
INSERT INTO signing_keys_new (kid, alg, sealed_private_key, public_jwk, created_at_us, retire_at_us)
    SELECT kid, alg, sealed_private_key, public_jwk, created_at_us, retire_at_us FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_new RENAME TO signing_keys;
CREATE INDEX signing_keys_alg ON signing_keys (alg, retire_at_us);
