-- The newest $1 rows of sync_passes, of every process.
SELECT id, owner, started_at, finished_at, outcome, pairs::int8 AS pairs, requests,
       visits_written, failures::int8 AS failures
  FROM sync_passes ORDER BY id DESC LIMIT $1
