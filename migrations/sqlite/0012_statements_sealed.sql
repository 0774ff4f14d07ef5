-- An issued statement cannot be replaced (issue 17, M5). `INSERT OR REPLACE` resolves a
-- conflict by deleting the old row without firing its DELETE triggers (SQLite fires them
-- only under `recursive_triggers`), which let a finalized statement be swapped for another
-- with the same id, or for another live one of the same agreement and period. This refuses
-- any insert that would collide with an issued row, whatever the conflict clause.
CREATE TRIGGER statements_issued_are_not_replaced BEFORE INSERT ON statements
WHEN EXISTS (
    SELECT 1 FROM statements s
    WHERE s.status <> 'draft'
      AND (s.id = NEW.id
           OR (s.status = 'finalized' AND NEW.status <> 'void'
               AND s.agreement_id = NEW.agreement_id AND s.period = NEW.period))
)
BEGIN
    SELECT RAISE(ABORT, 'statement is issued and cannot change');
END;
