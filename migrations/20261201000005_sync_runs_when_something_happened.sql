-- From this version on, a quiet run (nothing written, no new reject, no recovery, outcome ok)
-- leaves no sync_runs row: sync_passes counts every pass, sync_state holds each pair's last run.
COMMENT ON TABLE sync_runs IS 'a row per run of a pair in which something happened (visits or activities written, a new reject, a recovery, or an outcome other than ok); quiet runs are counted in sync_passes and on sync_state';
