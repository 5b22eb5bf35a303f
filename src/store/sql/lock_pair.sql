-- Tries a pair's advisory lock; false when another session holds it.
-- $1 agent, $2 user, $3 activity filter ('' for none).
SELECT pg_try_advisory_lock(szb_pair_lock_key($1, $2, $3))
