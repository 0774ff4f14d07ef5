-- An issued statement cannot be removed wholesale (issue 17, M5). Row triggers do not fire
-- on TRUNCATE, so `TRUNCATE statements CASCADE` and a re-insert replaced a finalized
-- statement. Statement-level BEFORE TRUNCATE triggers refuse it on both tables while any
-- statement is issued (a store of drafts only may still be emptied). For defence in depth,
-- docs/OPERATIONS.md also shows running the gateway as a role without TRUNCATE.
CREATE FUNCTION statements_truncate_guard() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM statements WHERE status <> 'draft') THEN
        RAISE EXCEPTION 'statement is issued and cannot change' USING ERRCODE = 'P0001';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER statements_issued_are_not_truncated BEFORE TRUNCATE ON statements
FOR EACH STATEMENT EXECUTE FUNCTION statements_truncate_guard();

CREATE TRIGGER statement_adjustments_issued_are_not_truncated BEFORE TRUNCATE ON statement_adjustments
FOR EACH STATEMENT EXECUTE FUNCTION statements_truncate_guard();
