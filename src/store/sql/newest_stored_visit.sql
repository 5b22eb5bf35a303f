-- The newest visit_at stored for pair $1-$3 (agent, user, filter; of its activity when filtered).
SELECT max(visit_at) FROM visits
 WHERE agent_id = $1 AND user_id = $2 AND ($3 = '' OR activity_id = $3)
