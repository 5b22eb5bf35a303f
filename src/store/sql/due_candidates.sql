-- Up to $3 pairs due by $1 with a free lease, but pairs $4-$6 (not the caller's), most valuable first:
-- never synced, late by over a tick ($2 s), by likely new visits (rate × time since checked), longest due.
SELECT agent_id, user_id, activity_filter, next_due_at,
       last_run_at IS NULL AS never,
       next_due_at IS NOT NULL AND next_due_at <= $1 - make_interval(secs => $2) AS late,
       arrival_rate * extract(epoch FROM $1 - coalesce(last_run_at, $1))::float8 AS value
  FROM sync_state
 WHERE (next_due_at IS NULL OR next_due_at <= $1)
   AND (lease_owner IS NULL OR lease_expires_at < now())
   AND (agent_id, user_id, activity_filter) NOT IN (
           SELECT * FROM UNNEST($4::int8[], $5::int8[], $6::text[]))
 ORDER BY never DESC, late DESC, value DESC, next_due_at NULLS FIRST
 LIMIT $3
