-- Webhooks: endpoints (runtime objects), their signing secrets, messages (the exact body
-- sent), one delivery per (message, endpoint) fan-out and every attempt made.
CREATE TABLE webhook_endpoints (
    id               TEXT PRIMARY KEY,
    -- NULL: an endpoint of the company's own app, which hears every partner's events.
    partner_id       TEXT REFERENCES partners (id),
    url              TEXT NOT NULL,
    description      TEXT NOT NULL,
    -- JSON array of exact types and `prefix.*` patterns; empty = every type.
    event_types      TEXT NOT NULL,
    enabled          BOOLEAN NOT NULL,
    disabled_reason  TEXT,
    rate_limit       INTEGER CHECK (rate_limit IS NULL OR rate_limit > 0),
    ordered          BOOLEAN NOT NULL,
    scheme           TEXT NOT NULL CHECK (scheme IN ('v1', 'v1a')),
    -- Rate limit state (GCRA): the earliest instant the next delivery may start.
    rate_tat_us      INTEGER NOT NULL DEFAULT 0,
    failing_since_us INTEGER,
    created_at_us    INTEGER NOT NULL,
    updated_at_us    INTEGER NOT NULL,
    deleted_at_us    INTEGER
);
CREATE INDEX webhook_endpoints_partner ON webhook_endpoints (partner_id);

CREATE TABLE webhook_secrets (
    endpoint_id   TEXT NOT NULL REFERENCES webhook_endpoints (id),
    version       INTEGER NOT NULL,
    scheme        TEXT NOT NULL CHECK (scheme IN ('v1', 'v1a')),
    -- The secret sealed under the master key (AES-256-GCM, endpoint and version bound).
    sealed        TEXT NOT NULL,
    public_key    TEXT,
    created_at_us INTEGER NOT NULL,
    -- Stops signing at this instant (the rotation overlap); NULL while current.
    retire_at_us  INTEGER,
    PRIMARY KEY (endpoint_id, version)
);

CREATE TABLE webhook_messages (
    -- msg_ + a UUIDv7: ids sort in creation order.
    id            TEXT PRIMARY KEY,
    partner_id    TEXT,
    type          TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    -- The exact bytes sent (and signed); NULL once purged after the retention period.
    payload       TEXT,
    purged_at_us  INTEGER
);
CREATE INDEX webhook_messages_partner ON webhook_messages (partner_id, id);
CREATE INDEX webhook_messages_created ON webhook_messages (created_at_us);

CREATE TABLE webhook_deliveries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     TEXT NOT NULL REFERENCES webhook_messages (id),
    endpoint_id    TEXT NOT NULL REFERENCES webhook_endpoints (id),
    state          TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed', 'cancelled')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    -- When due: the next attempt, or while `sending` the end of the sender's lease (so a
    -- delivery whose sender died is due again).
    next_at_us     INTEGER NOT NULL,
    lease_owner    TEXT,
    last_status    INTEGER,
    last_error     TEXT,
    created_at_us  INTEGER NOT NULL,
    updated_at_us  INTEGER NOT NULL,
    finished_at_us INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at_us) WHERE state IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_endpoint_open ON webhook_deliveries (endpoint_id, id) WHERE state IN ('pending', 'sending');
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, state, message_id);
CREATE INDEX webhook_deliveries_message ON webhook_deliveries (message_id);

CREATE TABLE webhook_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id      INTEGER NOT NULL REFERENCES webhook_deliveries (id),
    message_id       TEXT NOT NULL,
    endpoint_id      TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    started_at_us    INTEGER NOT NULL,
    duration_us      INTEGER NOT NULL,
    status           INTEGER,
    outcome          TEXT NOT NULL,
    error            TEXT,
    response_headers TEXT,
    response_body    TEXT,
    next_at_us       INTEGER
);
CREATE INDEX webhook_attempts_message ON webhook_attempts (message_id, id);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, started_at_us);

-- Usage thresholds already announced (`usage.threshold.crossed`): one row per partner,
-- meter, window and threshold, so each crossing is sent once.
CREATE TABLE usage_threshold_marks (
    partner_id    TEXT NOT NULL REFERENCES partners (id),
    meter         TEXT NOT NULL,
    window_start  TEXT NOT NULL,
    threshold     TEXT NOT NULL,
    crossed_at_us INTEGER NOT NULL,
    PRIMARY KEY (partner_id, meter, window_start, threshold)
);
