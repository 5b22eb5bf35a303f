-- The id of the newest pass row, 0 without one.
SELECT coalesce(max(id), 0) FROM sync_passes
