-- Sandbox partners (`sandbox = true` in config): synced like the other partner fields, and
-- stamped on each of their usage events when it is written, so the mark stays with the
-- event (a client cannot set it: it comes from the partners row, not from the event).
ALTER TABLE partners ADD COLUMN sandbox BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE usage_events ADD COLUMN sandbox BOOLEAN NOT NULL DEFAULT FALSE;
