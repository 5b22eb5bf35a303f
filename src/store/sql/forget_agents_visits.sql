-- Deletes the visits rows of agents $1 (forgetting the demo's agents).
DELETE FROM visits WHERE agent_id = ANY($1)
