-- Revenue-share statements. A statement's content is one canonical JSON document (the
-- hash is over it); the columns beside it are what lists filter and sort on.
CREATE TABLE statements (
    id                TEXT PRIMARY KEY,
    partner_id        TEXT NOT NULL REFERENCES partners (id),
    agreement_id      TEXT NOT NULL,
    agreement_version INTEGER NOT NULL,
    period            TEXT NOT NULL,
    period_start_us   BIGINT NOT NULL,
    period_end_us     BIGINT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('draft', 'finalized', 'void')),
    number            BIGINT,
    hash              TEXT,
    document          TEXT NOT NULL,
    currency          TEXT NOT NULL,
    total             TEXT NOT NULL,
    provisional       BOOLEAN NOT NULL,
    ledger_as_of_us   BIGINT NOT NULL,
    computed_at_us    BIGINT NOT NULL,
    finalized_at_us   BIGINT,
    finalized_by      TEXT,
    voided_at_us      BIGINT,
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
    created_at_us BIGINT NOT NULL
);
CREATE INDEX statement_adjustments_statement ON statement_adjustments (statement_id, created_at_us);

-- The store itself refuses to change an issued statement: only a draft may change or be
-- deleted, and a finalized one may only become void (nothing else about it may change).
CREATE FUNCTION statements_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'statement is issued and cannot change' USING ERRCODE = 'P0001';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status = 'draft' THEN
        RETURN NEW;
    END IF;
    IF OLD.status = 'finalized' AND NEW.status = 'void'
       AND (NEW.id, NEW.partner_id, NEW.agreement_id, NEW.agreement_version, NEW.period,
            NEW.period_start_us, NEW.period_end_us, NEW.number, NEW.hash, NEW.document,
            NEW.currency, NEW.total, NEW.provisional, NEW.ledger_as_of_us, NEW.computed_at_us,
            NEW.finalized_at_us, NEW.finalized_by, NEW.replaces)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.partner_id, OLD.agreement_id, OLD.agreement_version, OLD.period,
            OLD.period_start_us, OLD.period_end_us, OLD.number, OLD.hash, OLD.document,
            OLD.currency, OLD.total, OLD.provisional, OLD.ledger_as_of_us, OLD.computed_at_us,
            OLD.finalized_at_us, OLD.finalized_by, OLD.replaces) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'statement is issued and cannot change' USING ERRCODE = 'P0001';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER statements_issued_are_immutable BEFORE UPDATE OR DELETE ON statements
FOR EACH ROW EXECUTE FUNCTION statements_guard();

CREATE FUNCTION statement_adjustments_guard() RETURNS trigger AS $$
DECLARE
    sid TEXT;
BEGIN
    IF TG_OP = 'INSERT' THEN sid := NEW.statement_id; ELSE sid := OLD.statement_id; END IF;
    IF (SELECT status FROM statements WHERE id = sid) IS DISTINCT FROM 'draft' THEN
        RAISE EXCEPTION 'statement is issued and cannot change' USING ERRCODE = 'P0001';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER statement_adjustments_draft_only BEFORE INSERT OR UPDATE OR DELETE ON statement_adjustments
FOR EACH ROW EXECUTE FUNCTION statement_adjustments_guard();

-- Late usage: what the ledger received after a statement's cut-off, found per partner by
-- arrival time rather than by scanning every event since the first statement.
CREATE INDEX usage_events_partner_received ON usage_events (partner_id, received_at_us);
