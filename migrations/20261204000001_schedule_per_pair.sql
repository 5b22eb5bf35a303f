-- A schedule per pair (sync.refresh = "adaptive"): each pair's arrival rate, learnt from the
-- visitAt of the new visits its checks find, sets how often it is checked between the cron
-- ticks; due_reason says why it is due when it is. Existing pairs start with no rate, as if
-- they had seen nothing new: their next checks learn it.
ALTER TABLE sync_state
    ADD COLUMN arrival_rate   double precision NOT NULL DEFAULT 0
        CHECK (arrival_rate >= 0 AND arrival_rate < 'Infinity'),
    ADD COLUMN rate_at        timestamptz,
    ADD COLUMN last_found_new integer NOT NULL DEFAULT 0 CHECK (last_found_new >= 0),
    ADD COLUMN due_reason     text
        CHECK (due_reason IN ('new', 'sweep', 'hot', 'open', 'changed', 'backoff'));

-- The passes of `run` look for due pairs by due time.
CREATE INDEX sync_state_next_due_idx ON sync_state (next_due_at);

COMMENT ON COLUMN sync_state.next_due_at IS 'the pair is not claimed by `run` before this time: with sync.refresh = adaptive, its own due time (never later than the next schedule tick after its last run, later while it backs off after failures); with every-tick, the next tick; NULL when due at once';
COMMENT ON COLUMN sync_state.arrival_rate IS 'new visits per second the pair''s viewer starts, as of rate_at: a count of the visits its checks found, decayed with sync.rate_half_life';
COMMENT ON COLUMN sync_state.rate_at IS 'when arrival_rate was last brought up to date (the pair''s latest check); NULL before the first';
COMMENT ON COLUMN sync_state.last_found_new IS 'new visits the pair''s latest run inserted';
COMMENT ON COLUMN sync_state.due_reason IS 'why next_due_at is when it is: new (never synced), sweep (the next tick), hot (its arrival rate), open (a visit still going on), changed (its latest check found new visits), backoff (failing); NULL before the first run';
