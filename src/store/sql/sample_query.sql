-- The query `szb-sync demo` prints and runs: viewers and minutes watched per activity of agents
-- $1, grouped by the activity's id (different activities often share a name).
SELECT a.id AS activity_id, a.name AS activity,
       count(DISTINCT v.user_id) AS viewers, count(*) AS visits,
       sum(v.duration_minutes) AS minutes_watched
  FROM visits v JOIN activities a ON a.id = v.activity_id
 WHERE v.agent_id = ANY($1)
 GROUP BY a.id
 ORDER BY minutes_watched DESC, a.id
 LIMIT 5
