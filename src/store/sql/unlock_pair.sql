-- Releases a pair's advisory lock. $1 agent, $2 user, $3 activity filter ('' for none).
SELECT pg_advisory_unlock(szb_pair_lock_key($1, $2, $3))
