-- Revenue-share statements. A statement's content is one canonical JSON document (the
-- hash is over it); the columns beside it are what lists filter and sort on.
CREATE TABLE statements (
    id                TEXT PRIMARY KEY,
    partner_id        TEXT NOT NULL REFERENCES partners (id),
    agreement_id      TEXT NOT NULL,
    agreement_version INTEGER NOT NULL,
    period            TEXT NOT NULL,
    period_start_us   INTEGER NOT NULL,
    period_end_us     INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('draft', 'finalized', 'void')),
    number            INTEGER,
    hash              TEXT,
    document          TEXT NOT NULL,
    currency          TEXT NOT NULL,
    total             TEXT NOT NULL,
    provisional       BOOLEAN NOT NULL,
    ledger_as_of_us   INTEGER NOT NULL,
    computed_at_us    INTEGER NOT NULL,
    finalized_at_us   INTEGER,
    finalized_by      TEXT,
    voided_at_us      INTEGER,
    voided_by         TEXT,
    void_reason       TEXT,
    replaces          TEXT REFERENCES statements (id),
    UNIQUE (partner_id, number),
    CHECK ((status = 'draft') = (number IS NULL)),
    CHECK ((status = 'draft') = (hash IS NULL)),
    CHECK ((status = 'void') = (voided_at_us IS NOT NULL))
);
-- One live statement per agreement and period; a void one stays beside its replacement.
CREATE UNIQUE INDEX statements_live ON statements (agreement_id, period) WHERE status <> 'void';
CREATE INDEX statements_partner ON statements (partner_id, period_start_us);

-- Manual lines on a draft; frozen with it.
CREATE TABLE statement_adjustments (
    id            TEXT PRIMARY KEY,
    statement_id  TEXT NOT NULL REFERENCES statements (id),
    amount        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    author        TEXT NOT NULL,
    created_at_us INTEGER NOT NULL
);
CREATE INDEX statement_adjustments_statement ON statement_adjustments (statement_id, created_at_us);

-- The store itself refuses to change an issued statement: only a draft may change or be
-- deleted, and a finalized one may only become void (nothing else about it may change).
CREATE TRIGGER statements_issued_are_immutable BEFORE UPDATE ON statements
WHEN OLD.status <> 'draft' AND NOT (
    OLD.status = 'finalized' AND NEW.status = 'void'
    AND NEW.id IS OLD.id AND NEW.partner_id IS OLD.partner_id
    AND NEW.agreement_id IS OLD.agreement_id AND NEW.agreement_version IS OLD.agreement_version
    AND NEW.period IS OLD.period AND NEW.period_start_us IS OLD.period_start_us
    AND NEW.period_end_us IS OLD.period_end_us AND NEW.number IS OLD.number
    AND NEW.hash IS OLD.hash AND NEW.document IS OLD.document AND NEW.currency IS OLD.currency
    AND NEW.total IS OLD.total AND NEW.provisional IS OLD.provisional
    AND NEW.ledger_as_of_us IS OLD.ledger_as_of_us AND NEW.computed_at_us IS OLD.computed_at_us
    AND NEW.finalized_at_us IS OLD.finalized_at_us AND NEW.finalized_by IS OLD.finalized_by
    AND NEW.replaces IS OLD.replaces
)
BEGIN
    SELECT RAISE(ABORT, 'statement is issued and cannot change');
END;

CREATE TRIGGER statements_issued_are_kept BEFORE DELETE ON statements
WHEN OLD.status <> 'draft'
BEGIN
    SELECT RAISE(ABORT, 'statement is issued and cannot change');
END;

CREATE TRIGGER statement_adjustments_insert_draft_only BEFORE INSERT ON statement_adjustments
WHEN (SELECT status FROM statements WHERE id = NEW.statement_id) IS NOT 'draft'
BEGIN
    SELECT RAISE(ABORT, 'statement is issued and cannot change');
END;

CREATE TRIGGER statement_adjustments_update_draft_only BEFORE UPDATE ON statement_adjustments
WHEN (SELECT status FROM statements WHERE id = OLD.statement_id) IS NOT 'draft'
BEGIN
    SELECT RAISE(ABORT, 'statement is issued and cannot change');
END;

CREATE TRIGGER statement_adjustments_delete_draft_only BEFORE DELETE ON statement_adjustments
WHEN (SELECT status FROM statements WHERE id = OLD.statement_id) IS NOT 'draft'
BEGIN
    SELECT RAISE(ABORT, 'statement is issued and cannot change');
END;

-- Late usage: what the ledger received after a statement's cut-off, found per partner by
-- arrival time rather than by scanning every event since the first statement.
CREATE INDEX usage_events_partner_received ON usage_events (partner_id, received_at_us);
