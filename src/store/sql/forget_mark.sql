-- Forgets the mark and backoff of pair $2-$4 (agent, user, filter) unless a live process other
-- than $1 leases it; returns how many marks went and whether it was leased.
WITH live AS MATERIALIZED (SELECT k FROM szb_advisory_lock_keys() AS k),
     t AS (SELECT s.agent_id,
                  (s.lease_owner IS NULL OR s.lease_owner = $1 OR s.lease_expires_at < now()
                   OR szb_owner_lock_key(s.lease_owner) NOT IN (SELECT k FROM live)) AS free
             FROM sync_state s
            WHERE s.agent_id = $2 AND s.user_id = $3 AND s.activity_filter = $4),
     u AS (UPDATE sync_state s SET settled_count = 0, anchor_visit_at = NULL,
                  anchor_activity_ids = '{}', upstream_total = NULL,
                  mark_moved_at = now(), failures_in_row = 0, next_due_at = NULL
             FROM t
            WHERE s.agent_id = $2 AND s.user_id = $3 AND s.activity_filter = $4
              AND t.free
           RETURNING 1)
SELECT (SELECT count(*) FROM u) AS forgotten,
       (SELECT count(*) FROM t WHERE NOT t.free) AS leased
