-- The configured pairs $1-$3 (agents, users, filters) by state: failing, never synced, ok, and
-- the seconds since the oldest last success.
WITH p AS (SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[])
                  AS p (agent_id, user_id, activity_filter)),
     j AS (SELECT coalesce(s.failures_in_row > 0 OR s.last_outcome = 'failed', false) AS failing,
                  s.last_success_at
             FROM p LEFT JOIN sync_state s USING (agent_id, user_id, activity_filter))
SELECT count(*) FILTER (WHERE failing) AS failing,
       count(*) FILTER (WHERE NOT failing AND last_success_at IS NULL) AS never_synced,
       count(*) FILTER (WHERE NOT failing AND last_success_at IS NOT NULL) AS ok,
       extract(epoch FROM now() - min(last_success_at))::float8 AS oldest
  FROM j
