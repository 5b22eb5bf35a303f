-- Deletes the sync_state rows of agents $1 (forgetting the demo's agents).
DELETE FROM sync_state WHERE agent_id = ANY($1)
