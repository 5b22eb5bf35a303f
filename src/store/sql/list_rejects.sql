-- Rejects of agent $1 and user $2 (NULL: any) first seen since $3 (NULL: ever), newest first,
-- $4 skipped and at most $5; every row also carries how many match.
WITH f AS (
    SELECT * FROM sync_rejects
     WHERE ($1::int8 IS NULL OR agent_id = $1)
       AND ($2::int8 IS NULL OR user_id = $2)
       AND ($3::timestamptz IS NULL OR first_seen_at >= $3))
-- The count comes even with a page past the end, which then has no rows.
SELECT m.matching, pg.*
  FROM (SELECT count(*) AS matching FROM f) m
  LEFT JOIN LATERAL (
       SELECT id, agent_id, user_id, activity_filter, reason, raw, list_position,
              first_seen_at
         FROM f ORDER BY first_seen_at DESC, id DESC
       OFFSET $4 LIMIT $5) pg ON true
