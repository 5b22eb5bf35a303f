-- The mean minutes of a $1 percent block sample of visits, and the users of pairs that synced
-- visits: the totals' estimates for a large table.
SELECT (SELECT avg(duration_minutes)::float8 FROM visits TABLESAMPLE SYSTEM ($1))
           AS mean_minutes,
       (SELECT count(DISTINCT user_id) FROM sync_state
         WHERE settled_count > 0 OR coalesce(upstream_total, 0) > 0) AS viewers
