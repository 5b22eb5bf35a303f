-- Failing pairs back off: a pair whose token is refused, or which failed several runs in a
-- row, is not tried again before next_due_at, which grows with each further failure up to a
-- cap (sync.failure_backoff, sync.max_failure_backoff). A success clears both.
ALTER TABLE sync_state
    ADD COLUMN failures_in_row integer NOT NULL DEFAULT 0 CHECK (failures_in_row >= 0),
    ADD COLUMN next_due_at     timestamptz;

COMMENT ON COLUMN sync_state.failures_in_row IS 'runs of the pair that failed in a row; 0 after a success';
COMMENT ON COLUMN sync_state.next_due_at IS 'a failing pair is not tried again by `run` before this time; NULL when it is due at every pass';
