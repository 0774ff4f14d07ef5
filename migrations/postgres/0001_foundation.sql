-- Instants are BIGINT microseconds since the Unix epoch in both backends (see src/time.rs).

CREATE TABLE partners (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    contact       TEXT,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    key_hash        TEXT NOT NULL UNIQUE,
    prefix          TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'finance', 'partner', 'app')),
    partner_id      TEXT REFERENCES partners (id),
    name            TEXT,
    created_at_us   BIGINT NOT NULL,
    revoked_at_us   BIGINT,
    CHECK ((role = 'partner') = (partner_id IS NOT NULL))
);

CREATE TABLE usage_events (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partner_id     TEXT NOT NULL,
    source         TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    type           TEXT NOT NULL,
    subject        TEXT,
    time_us        BIGINT NOT NULL,
    data           JSONB,
    extensions     JSONB,
    received_at_us BIGINT NOT NULL,
    UNIQUE (partner_id, source, event_id)
);
-- Covers meter queries: the window join seeks (partner_id, time_us) and reads type and
-- subject from the index without touching the table (COUNT, UNIQUE_COUNT of subject).
CREATE INDEX usage_events_partner_time ON usage_events (partner_id, time_us, type, subject);

CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    partner_id     TEXT,
    payload        JSONB NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('pending', 'running', 'succeeded', 'dead')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL,
    run_at_us      BIGINT NOT NULL,
    lease_owner    TEXT,
    lease_until_us BIGINT,
    last_error     TEXT,
    dedupe_key     TEXT UNIQUE,
    created_at_us  BIGINT NOT NULL,
    updated_at_us  BIGINT NOT NULL,
    finished_at_us BIGINT
);
CREATE INDEX jobs_due ON jobs (state, run_at_us);
CREATE INDEX jobs_lease ON jobs (state, lease_until_us);
