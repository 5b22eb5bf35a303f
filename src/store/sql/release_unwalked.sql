-- Gives back owner $1's leases of pairs $2-$4 (agents, users, filters) never walked, and the
-- locks of those whose $5 (locked) is true; returns how many locks were released.
WITH p AS (SELECT * FROM UNNEST($2::int8[], $3::int8[], $4::text[], $5::bool[])
                         AS p (agent_id, user_id, activity_filter, locked)),
     released AS (
         UPDATE sync_state s SET lease_owner = NULL, lease_expires_at = NULL,
                leased_at = NULL
           FROM p WHERE (s.agent_id, s.user_id, s.activity_filter)
                        = (p.agent_id, p.user_id, p.activity_filter)
            AND s.lease_owner = $1)
SELECT count(*) FILTER (WHERE pg_advisory_unlock(szb_pair_lock_key(p.agent_id, p.user_id,
                                                                    p.activity_filter)))
  FROM p WHERE p.locked
