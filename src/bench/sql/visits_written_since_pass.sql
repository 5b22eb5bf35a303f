-- Visits the passes after pass $1 wrote (quiet runs leave no run row; every pass has one).
SELECT coalesce(sum(visits_written), 0)::int8 FROM sync_passes WHERE id > $1
