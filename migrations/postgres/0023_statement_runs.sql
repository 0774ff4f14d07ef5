-- A period run started from the console (issue 23): its progress, kept in the store so
-- that any instance shows it, and what failed. The run itself is idempotent (each draft is
-- computed or recomputed), so a run whose instance stopped is simply run again.
CREATE TABLE statement_runs (
    id              TEXT PRIMARY KEY,
    period          TEXT NOT NULL,
    started_by      TEXT NOT NULL,
    started_at_us   BIGINT NOT NULL,
    -- Progress: statements done of the total, updated as each finishes.
    done            BIGINT NOT NULL,
    total           BIGINT NOT NULL,
    updated_at_us   BIGINT NOT NULL,
    finished_at_us  BIGINT,
    -- JSON array of {partner, agreement, error} once finished.
    failures        TEXT
);
CREATE INDEX statement_runs_period ON statement_runs (period, started_at_us);
