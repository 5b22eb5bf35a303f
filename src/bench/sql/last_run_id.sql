-- The id of the newest run row, 0 without one.
SELECT coalesce(max(id), 0) FROM sync_runs
