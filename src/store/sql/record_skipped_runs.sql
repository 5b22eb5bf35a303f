-- Records one run with outcome $4 (skipped) and error $5 for each pair of $1-$3 (agents, users,
-- filters): runs that did not start because another process holds the pair.
INSERT INTO sync_runs (agent_id, user_id, activity_filter, finished_at, outcome, error)
SELECT p.*, now(), $4, $5 FROM UNNEST($1::int8[], $2::int8[], $3::text[]) AS p
