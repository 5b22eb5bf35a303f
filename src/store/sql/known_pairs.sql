-- Every pair with a state row (every pair that ever ran), in key order.
SELECT agent_id, user_id, activity_filter FROM sync_state ORDER BY 1, 2, 3
