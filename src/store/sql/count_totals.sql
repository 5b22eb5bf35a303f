-- The rows of activities and sync_rejects, and, if $1 (the table is small), the visits, viewers
-- and minutes counted over at most $2 visits.
SELECT (SELECT count(*) FROM activities) AS activities,
       (SELECT count(*) FROM sync_rejects) AS rejects,
       v.visits, v.viewers, v.minutes
  FROM (SELECT count(*) AS visits, count(DISTINCT user_id) AS viewers,
               coalesce(sum(duration_minutes), 0)::int8 AS minutes
          FROM (SELECT user_id, duration_minutes FROM visits
                 WHERE $1 LIMIT $2) s) v
