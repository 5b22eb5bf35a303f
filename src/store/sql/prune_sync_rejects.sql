-- Deletes up to $2 sync_rejects rows, oldest first, last read before $1.
DELETE FROM sync_rejects WHERE id IN (
    SELECT id FROM sync_rejects WHERE last_seen_at < $1
     ORDER BY last_seen_at LIMIT $2)
