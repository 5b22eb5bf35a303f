-- A page of configured pairs $1-$3 (agents, users, filters), worst first (lagging after $4 s; if $10,
-- hot ones only, soonest due first), of agent $5, user $6 (NULL: any), if $7 needing a look, skip $8, max $9.
WITH p AS (SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::text[])
                  AS p (agent_id, user_id, activity_filter)),
     j AS (
         SELECT p.agent_id, p.user_id, p.activity_filter, s.settled_count,
                s.upstream_total, s.last_outcome, s.last_run_at, s.last_success_at,
                s.last_error, coalesce(s.failures_in_row, 0) AS failures_in_row,
                CASE WHEN s.next_due_at > now() THEN s.next_due_at END AS next_due_at,
                CASE WHEN s.lease_expires_at > now() THEN s.lease_owner END AS lease_owner,
                CASE WHEN s.last_run_at IS NULL THEN 'new' ELSE s.due_reason END AS due_reason,
                CASE WHEN coalesce(s.failures_in_row > 0 OR s.last_outcome = 'failed', false) THEN 0
                     WHEN s.last_success_at IS NULL THEN 1
                     WHEN s.last_success_at < now() - make_interval(secs => $4) THEN 2
                     ELSE 3 END AS rank
           FROM p LEFT JOIN sync_state s USING (agent_id, user_id, activity_filter)
          WHERE ($5::int8 IS NULL OR p.agent_id = $5)
            AND ($6::int8 IS NULL OR p.user_id = $6)),
     f AS (SELECT * FROM j WHERE (NOT $7 OR rank < 3)
                                 AND (NOT $10 OR due_reason IN ('new', 'hot', 'open', 'changed')))
-- The count comes even with a page past the end, which then has no rows.
SELECT m.matching, pg.*
  FROM (SELECT count(*) AS matching FROM f) m
  LEFT JOIN LATERAL (
       SELECT * FROM f
        ORDER BY CASE WHEN $10 THEN next_due_at END NULLS FIRST, rank,
                 last_success_at NULLS FIRST, agent_id, user_id, activity_filter
       OFFSET $8 LIMIT $9) pg ON true
