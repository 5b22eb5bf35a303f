-- The advisory locks, defined once in the database: every statement that takes or gives back a
-- pair's lock, or asks whether an owner is alive, calls these, so the keys cannot drift apart.

-- A pair's lock. Advisory locks span the database, not a schema, so a schema other than `public`
-- is part of the key: two deployments in two schemas of one database never block each other's
-- pairs. In `public` the key is the one versions before `database.schema` took, so replicas of
-- every version exclude each other. STABLE (it reads current_schema()), so it is inlined.
CREATE FUNCTION szb_pair_lock_key(agent_id int8, user_id int8, activity_filter text) RETURNS int8
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT hashtextextended('szb-sync:' || coalesce(nullif(current_schema(), 'public') || ':', '')
                                  || agent_id || ':' || user_id || ':' || activity_filter, 0) $$;

COMMENT ON FUNCTION szb_pair_lock_key(int8, int8, text) IS 'szb-sync: the advisory-lock key of a pair, held by the process walking it';

-- A process's liveness lock, held by its coordinator's connection for as long as it lives.
CREATE FUNCTION szb_owner_lock_key(owner text) RETURNS int8
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtextextended('szb-sync-owner:' || owner, 0) $$;

COMMENT ON FUNCTION szb_owner_lock_key(text) IS 'szb-sync: the advisory-lock key a live process (sync_state.lease_owner) holds';

-- The keys of the advisory locks (taken with one int8 key) granted in this database, to any
-- session: a lease whose owner's key is not among them belongs to a process that is gone.
-- VOLATILE: it reads pg_locks; a statement reads it once, in a MATERIALIZED CTE. ROWS 10 is about
-- what the planner guessed for the filtered pg_locks inline; at its default (1000) it would
-- rather scan all of sync_state's key index than look the claimed pairs up one by one.
CREATE FUNCTION szb_advisory_lock_keys() RETURNS SETOF int8
    LANGUAGE sql VOLATILE ROWS 10
    AS $$ SELECT (l.classid::int8 << 32) | l.objid::int8 FROM pg_locks l
           WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) $$;

COMMENT ON FUNCTION szb_advisory_lock_keys() IS 'szb-sync: the keys of the advisory locks held in this database (pair locks and live processes'' liveness locks)';
