-- Deletes up to $2 finished sync_passes rows, oldest first, that started before $1.
DELETE FROM sync_passes WHERE id IN (
    SELECT id FROM sync_passes WHERE started_at < $1 AND finished_at IS NOT NULL
     ORDER BY started_at LIMIT $2)
