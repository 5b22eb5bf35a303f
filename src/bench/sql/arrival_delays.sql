-- Each arrival of $1-$4 (agents, users, activities, visitAt), in order: seconds from its visitAt
-- until its row was first written (visits.first_synced_at), NULL while it has not landed.
SELECT extract(epoch FROM v.first_synced_at - a.visit_at)::float8
FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::timestamptz[]) WITH ORDINALITY
     AS a (agent_id, user_id, activity_id, visit_at, n)
LEFT JOIN visits v USING (agent_id, user_id, activity_id, visit_at)
ORDER BY a.n
