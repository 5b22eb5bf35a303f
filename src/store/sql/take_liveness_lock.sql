-- Takes the process's liveness lock for as long as its connection lives; false when another
-- session holds it. $1 the owner id.
SELECT pg_try_advisory_lock(szb_owner_lock_key($1))
