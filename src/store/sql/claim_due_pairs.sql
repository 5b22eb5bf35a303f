-- Leases to owner $1 for $2 s up to $5 free pairs of $6-$8 (agents, users, filters) due by $3
-- (NULL: all) and not run by $1 since $4; logs taken-over runs as $9; tries each pair's lock.
WITH live AS MATERIALIZED (SELECT k FROM szb_advisory_lock_keys() AS k),
     cand AS (
         SELECT s.agent_id, s.user_id, s.activity_filter,
                s.lease_owner AS prev_owner, s.leased_at AS prev_leased_at
           FROM UNNEST($6::int8[], $7::int8[], $8::text[])
                AS p (agent_id, user_id, activity_filter)
           JOIN sync_state s USING (agent_id, user_id, activity_filter)
          WHERE NOT (s.leased_by IS NOT DISTINCT FROM $1 AND s.leased_at >= $4)
            AND ($3::timestamptz IS NULL OR s.next_due_at IS NULL
                 OR s.next_due_at <= $3)
            AND (s.lease_owner IS NULL OR s.lease_owner = $1 OR s.lease_expires_at < now()
                 OR szb_owner_lock_key(s.lease_owner) NOT IN (SELECT k FROM live))
          LIMIT $5
            FOR NO KEY UPDATE OF s SKIP LOCKED),
     claimed AS (
         UPDATE sync_state s SET lease_owner = $1, leased_by = $1,
                lease_expires_at = now() + make_interval(secs => $2),
                leased_at = now()
           FROM cand c
          WHERE (s.agent_id, s.user_id, s.activity_filter)
                = (c.agent_id, c.user_id, c.activity_filter)
      RETURNING s.agent_id, s.user_id, s.activity_filter, s.settled_count,
                s.anchor_visit_at, s.anchor_activity_ids, s.upstream_total,
                s.leased_at, s.arrival_rate, s.rate_at, s.last_run_at, s.due_reason,
                c.prev_owner, c.prev_leased_at),
     lost AS (
         INSERT INTO sync_runs (agent_id, user_id, activity_filter, started_at,
                finished_at, outcome, error)
         SELECT agent_id, user_id, activity_filter,
                coalesce(prev_leased_at, now()), now(), $9,
                'the process ' || prev_owner
                || ' ended, or lost its lease, before the run finished'
           FROM claimed WHERE prev_owner IS NOT NULL)
SELECT c.*, pg_try_advisory_lock(szb_pair_lock_key(c.agent_id, c.user_id, c.activity_filter))
       AS locked
  FROM claimed c
