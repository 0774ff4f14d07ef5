-- Who wrote each usage event (issue 17): the gateway itself, an admin, app or partner key
-- (with its id), an inbound webhook source (trusted for money or speaking for the partner),
-- or an operator's import (with the file name). Statements show it and can leave out what
-- a partner reported about itself. Events written before this migration read 'legacy'.
-- A constant default adds the column without rewriting the ledger.
ALTER TABLE usage_events ADD COLUMN recorded_by TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE usage_events ADD COLUMN recorded_ref TEXT;
-- Finds a partner's self-reported events in a period at once, so statements of agreements
-- that exclude them filter only when there is something to filter (the common case keeps
-- the index-only meter queries). Small: only those rows are in it.
CREATE INDEX usage_events_self_reported ON usage_events (partner_id, time_us)
    WHERE recorded_by IN ('partner_key', 'partner_webhook');
-- When provenance began: every event received before it is 'legacy'; after it, the
-- gateway's own event types are only ever recorded by the gateway (the write rules), so a
-- statement counts their provenance from the covering index instead of reading every row.
CREATE TABLE ledger_provenance (since_us BIGINT NOT NULL);
INSERT INTO ledger_provenance (since_us) VALUES (CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
