-- The schedule's inputs for pairs $1-$3 (agents, users, filters, those with a state row): the arrival
-- rate decayed to now (half-life $4 s), an open visit (list past the settled prefix), last check's news.
SELECT s.agent_id, s.user_id, s.activity_filter,
       coalesce(s.arrival_rate * power(2::float8,
           -greatest(extract(epoch FROM now() - s.rate_at)::float8, 0) / $4), 0) AS rate,
       coalesce(s.upstream_total > s.settled_count, false) AS open,
       s.last_found_new > 0 AS found_new,
       s.next_due_at, s.due_reason, s.last_run_at
  FROM UNNEST($1::int8[], $2::int8[], $3::text[]) AS p (agent_id, user_id, activity_filter)
  JOIN sync_state s USING (agent_id, user_id, activity_filter)
