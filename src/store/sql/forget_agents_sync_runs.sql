-- Deletes the sync_runs rows of agents $1 (forgetting the demo's agents).
DELETE FROM sync_runs WHERE agent_id = ANY($1)
