-- Idempotency-Key: the first answer to a non-GET /v1 request, kept per (API key, key) so
-- a retry gets it again instead of running twice (src/http/idempotency.rs).
CREATE TABLE idempotency_keys (
    caller          TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('running', 'done')),
    status          BIGINT,
    headers         TEXT,
    body            BYTEA,
    created_at_us   BIGINT NOT NULL,
    locked_until_us BIGINT NOT NULL,
    expires_at_us   BIGINT NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at_us);
