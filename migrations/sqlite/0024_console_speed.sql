-- The month-end page counts, per statement, the events dated in its period that the ledger
-- received after the statement's cut-off. Found through (partner_id, received_at_us), that
-- read every event the partner sent since the cut-off and tested its date: for last month's
-- statements a month of events, seconds per page on a ledger of 10 million (docs/
-- PERFORMANCE.md, "Console"). An event received after the cut-off is either dated within
-- the hour before it (a short range of usage_events_partner_time) or arrived more than an
-- hour after its time: those are few, and all in this index (src/console/finance.rs,
-- count_after_cut_off). The condition is repeated word for word in that query, so both
-- planners may use the index.
CREATE INDEX usage_events_late ON usage_events (partner_id, time_us, received_at_us)
    WHERE received_at_us > time_us + 3600000000;
