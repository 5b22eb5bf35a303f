-- Pairs whose last run ended $1 (ok) after $2 and that hold no lease.
SELECT count(*) FROM sync_state
WHERE last_outcome = $1 AND last_run_at > $2 AND lease_owner IS NULL
