-- The pairs owner $1 holds leases on.
SELECT agent_id, user_id, activity_filter FROM sync_state WHERE lease_owner = $1
