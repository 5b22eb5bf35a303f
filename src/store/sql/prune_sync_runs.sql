-- Deletes up to $2 finished sync_runs rows, oldest first, that started before $1.
DELETE FROM sync_runs WHERE id IN (
    SELECT id FROM sync_runs WHERE started_at < $1 AND finished_at IS NOT NULL
     ORDER BY started_at LIMIT $2)
