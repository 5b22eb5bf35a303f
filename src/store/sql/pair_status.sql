-- The status of pairs $1-$3 (agents, users, filters), in their order; $4/$5/$6 the outcomes ok,
-- running and failed; $7 the arrival rates' half-life in seconds.
WITH p AS (
    SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[])
           WITH ORDINALITY AS p (agent_id, user_id, activity_filter, ord))
SELECT p.ord, s.settled_count, s.upstream_total,
       coalesce(s.failures_in_row, 0) AS failures_in_row,
       CASE WHEN s.next_due_at > now() THEN s.next_due_at END AS next_due_at,
       CASE WHEN s.last_run_at IS NULL THEN 'new' ELSE s.due_reason END AS due_reason,
       coalesce(s.arrival_rate * power(2::float8,
           -greatest(extract(epoch FROM now() - s.rate_at)::float8, 0) / $7), 0) AS arrival_rate,
       CASE WHEN s.lease_expires_at > now() THEN s.lease_owner END AS lease_owner,
       s.leased_by,
       -- A quiet run leaves no run row, and a skipped or running one has no
       -- state yet: show whichever is newer.
       CASE WHEN r.started_at > coalesce(s.last_run_at, '-infinity')
            THEN r.outcome ELSE s.last_outcome END AS outcome,
       CASE WHEN r.started_at > coalesce(s.last_run_at, '-infinity')
            THEN r.finished_at ELSE s.last_run_at END AS finished_at,
       CASE WHEN r.started_at > coalesce(s.last_run_at, '-infinity')
            THEN CASE WHEN r.outcome = $5 THEN NULL ELSE r.error END
            WHEN s.last_outcome = $6 THEN s.last_error END AS error,
       coalesce(s.last_success_at, ok.last_ok_at) AS last_ok_at,
       v.visits, j.rejects
  FROM p
  LEFT JOIN sync_state s USING (agent_id, user_id, activity_filter)
  LEFT JOIN LATERAL (
       SELECT outcome, started_at, finished_at, error FROM sync_runs o
        WHERE (o.agent_id, o.user_id, o.activity_filter)
              = (p.agent_id, p.user_id, p.activity_filter)
        ORDER BY o.started_at DESC, o.id DESC LIMIT 1) r ON true
  LEFT JOIN LATERAL (
       SELECT max(finished_at) AS last_ok_at FROM sync_runs o
        WHERE (o.agent_id, o.user_id, o.activity_filter)
              = (p.agent_id, p.user_id, p.activity_filter)
          AND o.outcome = $4) ok ON true
  LEFT JOIN LATERAL (
       SELECT count(*) AS visits FROM visits v
        WHERE v.agent_id = p.agent_id AND v.user_id = p.user_id
          AND (p.activity_filter = '' OR v.activity_id = p.activity_filter)) v ON true
  LEFT JOIN LATERAL (
       SELECT count(*) AS rejects FROM sync_rejects j
        WHERE (j.agent_id, j.user_id, j.activity_filter)
              = (p.agent_id, p.user_id, p.activity_filter)) j ON true
 ORDER BY p.ord
