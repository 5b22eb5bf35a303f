-- Of pairs $3-$5 (agents, users, filters) due by $2 (NULL: all) and not run by owner $1 since $6:
-- how many are claimable, how many held by a live process, and the abandoned ones' keys.
WITH live AS MATERIALIZED (SELECT k FROM szb_advisory_lock_keys() AS k),
     left_over AS (
         SELECT s.agent_id, s.user_id, s.activity_filter,
                (s.lease_owner IS NULL OR s.lease_owner = $1 OR s.lease_expires_at < now()
                 OR szb_owner_lock_key(s.lease_owner) NOT IN (SELECT k FROM live)) AS free,
                s.lease_owner IS NOT NULL AND s.lease_owner <> $1 AS leased
           FROM UNNEST($3::int8[], $4::int8[], $5::text[])
                AS p (agent_id, user_id, activity_filter)
           JOIN sync_state s USING (agent_id, user_id, activity_filter)
          WHERE NOT (s.leased_by IS NOT DISTINCT FROM $1 AND s.leased_at >= $6)
            AND ($2::timestamptz IS NULL OR s.next_due_at IS NULL
                 OR s.next_due_at <= $2))
SELECT count(*) FILTER (WHERE free) AS claimable,
       count(*) FILTER (WHERE NOT free) AS held,
       coalesce(array_agg(agent_id) FILTER (WHERE free AND leased), '{}') AS agents,
       coalesce(array_agg(user_id) FILTER (WHERE free AND leased), '{}') AS users,
       coalesce(array_agg(activity_filter) FILTER (WHERE free AND leased), '{}') AS filters
  FROM left_over
