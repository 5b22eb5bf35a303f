-- Extends by $2 seconds the leases of pairs $3-$5 (agents, users, filters) still held by owner $1.
UPDATE sync_state s SET lease_expires_at = now() + make_interval(secs => $2)
  FROM UNNEST($3::int8[], $4::int8[], $5::text[]) AS p (agent_id, user_id, activity_filter)
 WHERE (s.agent_id, s.user_id, s.activity_filter)
       = (p.agent_id, p.user_id, p.activity_filter)
   AND s.lease_owner = $1
