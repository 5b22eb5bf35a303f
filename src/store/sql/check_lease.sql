-- Locks pair $1-$3 (agent, user, filter)'s state row if owner $4 still leases it: the fence
-- of a page set aside.
SELECT 1 FROM sync_state
 WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3
   AND lease_owner = $4
   FOR NO KEY UPDATE
