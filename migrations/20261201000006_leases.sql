-- Replicas share the pairs through leases on sync_state. A pass claims due pairs in batches
-- (FOR NO KEY UPDATE SKIP LOCKED), sets lease_owner and lease_expires_at, renews the lease while
-- the pair is walked and clears it when the run is recorded. A lease whose owner died (its
-- liveness lock is gone) or that expired may be taken over by any replica.
ALTER TABLE sync_state
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN leased_by        text,
    ADD COLUMN leased_at        timestamptz,
    ADD CONSTRAINT sync_state_lease_check CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL));

COMMENT ON COLUMN sync_state.lease_owner IS 'the szb-sync process (host:pid:nonce) syncing the pair right now; NULL when nobody is';
COMMENT ON COLUMN sync_state.lease_expires_at IS 'when lease_owner''s lease runs out unless renewed; after that another replica may take the pair';
COMMENT ON COLUMN sync_state.leased_by IS 'the process that last claimed the pair (kept after the lease ends)';
COMMENT ON COLUMN sync_state.leased_at IS 'when leased_by claimed it: the start of the pair''s latest run';
COMMENT ON COLUMN sync_state.next_due_at IS 'the pair is not claimed by a pass of `run` scheduled before this time: the next schedule tick after its last run, later while it backs off after failures; NULL when due at any pass';

ALTER TABLE sync_passes ADD COLUMN owner text, ADD COLUMN due_by timestamptz;
COMMENT ON COLUMN sync_passes.due_by IS 'the schedule tick the pass is for: it ran pairs due by then (the passes of all replicas for one tick share it); NULL for szb-sync sync, which runs every pair';
COMMENT ON COLUMN sync_passes.owner IS 'the szb-sync process (host:pid:nonce) that made the pass; each replica makes its own passes';
COMMENT ON TABLE sync_passes IS 'one row per pass of one szb-sync process over the pairs it claimed';
COMMENT ON COLUMN sync_passes.pairs IS 'pairs the pass claimed and ran (synced, failed, skipped or interrupted)';

-- Runs opened by versions before leases and never closed: their process is gone (a running
-- process of an older version would not share pairs through leases anyway).
UPDATE sync_runs SET outcome = 'interrupted', finished_at = coalesce(finished_at, now()),
       error = coalesce(error, 'the process ended before the run finished')
 WHERE outcome = 'running';
