-- Passes after pass $1 that finished.
SELECT count(*) FROM sync_passes WHERE id > $1 AND finished_at IS NOT NULL
