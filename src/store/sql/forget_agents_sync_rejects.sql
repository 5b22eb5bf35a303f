-- Deletes the sync_rejects rows of agents $1 (forgetting the demo's agents).
DELETE FROM sync_rejects WHERE agent_id = ANY($1)
