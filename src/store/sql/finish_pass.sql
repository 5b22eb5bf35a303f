-- Closes pass $1's row: pairs $2, requests $3, visits written $4, failures $5, outcome $6.
UPDATE sync_passes SET finished_at = now(), pairs = $2, requests = $3,
       visits_written = $4, failures = $5, outcome = $6
 WHERE id = $1
