-- One row per pass over all pairs, so "how is the daemon doing?" never needs sync_runs, and
-- each pair's last run, success and error on its state row, so "when did this pair last sync?"
-- never needs the history. sync_runs can then be pruned (sync.keep_runs).

CREATE TABLE sync_passes (
    id             bigserial PRIMARY KEY,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    pairs          integer NOT NULL DEFAULT 0,
    requests       bigint  NOT NULL DEFAULT 0,
    visits_written bigint  NOT NULL DEFAULT 0,
    failures       integer NOT NULL DEFAULT 0,
    outcome        text    NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'ok', 'failed', 'interrupted'))
);

CREATE INDEX sync_passes_started_idx ON sync_passes (started_at);

COMMENT ON TABLE sync_passes IS 'one row per pass of szb-sync over every configured pair';
COMMENT ON COLUMN sync_passes.pairs IS 'pairs the pass ran (synced, failed, skipped or interrupted)';
COMMENT ON COLUMN sync_passes.visits_written IS 'visit rows inserted or changed by the pass';
COMMENT ON COLUMN sync_passes.failures IS 'pairs whose run failed';
COMMENT ON COLUMN sync_passes.outcome IS 'running | ok (no pair failed) | failed (some pair failed) | interrupted (shutdown)';

ALTER TABLE sync_state
    ADD COLUMN last_run_at     timestamptz,
    ADD COLUMN last_outcome    text,
    ADD COLUMN last_success_at timestamptz,
    ADD COLUMN last_error      text,
    ADD COLUMN last_error_at   timestamptz;

COMMENT ON COLUMN sync_state.last_run_at IS 'when the pair''s latest run finished';
COMMENT ON COLUMN sync_state.last_outcome IS 'that run''s outcome, as in sync_runs.outcome';
COMMENT ON COLUMN sync_state.last_success_at IS 'when a run of the pair last ended ok';
COMMENT ON COLUMN sync_state.last_error IS 'the latest error of the pair, kept after later successes';
COMMENT ON COLUMN sync_state.last_error_at IS 'when last_error happened';

-- Pruning by age reads the oldest rows first.
CREATE INDEX sync_runs_started_idx ON sync_runs (started_at);
