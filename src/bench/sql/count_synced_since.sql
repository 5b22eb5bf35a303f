-- Of pairs $1-$3 (agents, users, filters): how many ended $4 (ok) after $5 and hold no lease.
SELECT count(*) FROM UNNEST($1::int8[], $2::int8[], $3::text[])
      AS p (agent_id, user_id, activity_filter)
 JOIN sync_state s USING (agent_id, user_id, activity_filter)
WHERE s.last_outcome = $4 AND s.last_run_at > $5 AND s.lease_owner IS NULL
