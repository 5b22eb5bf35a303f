-- Makes a state row exist for each pair (new pairs get one; existing rows are left alone).
-- $1-$3 the pairs' agents, users and activity filters.
INSERT INTO sync_state (agent_id, user_id, activity_filter)
SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[])
ON CONFLICT DO NOTHING
