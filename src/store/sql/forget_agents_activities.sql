-- Deletes the activities of agents $1 that no visit names any more (forgetting the demo's agents).
DELETE FROM activities a WHERE a.agent_id = ANY($1)
   AND NOT EXISTS (SELECT 1 FROM visits v WHERE v.activity_id = a.id)
