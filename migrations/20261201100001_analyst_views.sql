-- Views for the questions analysts ask. Their names and columns are a contract, like the
-- tables': later versions add columns at the end, never rename.

-- Each visit with its activity's name and status. A LEFT JOIN: a visit of an activity
-- deleted upstream keeps its row, with a NULL name and status.
CREATE VIEW visit_details AS
SELECT v.agent_id,
       v.user_id,
       v.activity_id,
       a.name   AS activity_name,
       a.status AS activity_status,
       v.visit_at,
       v.last_online_at,
       v.duration_minutes
  FROM visits v
  LEFT JOIN activities a ON a.id = v.activity_id;

-- Per user and day, the day taken in Asia/Shanghai (the platform's zone) from visit_at.
CREATE VIEW user_daily AS
SELECT agent_id,
       user_id,
       (visit_at AT TIME ZONE 'Asia/Shanghai')::date AS day,
       count(*)                                      AS visits,
       sum(duration_minutes)                         AS minutes_watched,
       count(DISTINCT activity_id)                   AS activities
  FROM visits
 GROUP BY agent_id, user_id, (visit_at AT TIME ZONE 'Asia/Shanghai')::date;

-- Per activity with at least one visit. Peak concurrent viewers: each visit is the closed
-- interval [visit_at, last_online_at]; one user's overlapping or touching visits of the
-- activity are merged first, so a viewer counts once however many visits (devices, reloads)
-- they had at a time. Then a sweep: +1 where a merged interval starts, -1 where it ends, and at
-- one instant the starts come before the ends, so intervals that touch (one ends at the
-- instant the other starts) count as concurrent: both viewers were online at that instant.
CREATE VIEW activity_summary AS
WITH ordered AS (
    SELECT activity_id, agent_id, user_id, visit_at, last_online_at,
           max(last_online_at) OVER (PARTITION BY activity_id, agent_id, user_id
                                     ORDER BY visit_at, last_online_at
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS seen_until
      FROM visits
), islands AS (
    SELECT activity_id, agent_id, user_id, visit_at, last_online_at,
           count(*) FILTER (WHERE seen_until IS NULL OR visit_at > seen_until)
               OVER (PARTITION BY activity_id, agent_id, user_id
                     ORDER BY visit_at, last_online_at ROWS UNBOUNDED PRECEDING) AS island
      FROM ordered
), merged AS (
    SELECT activity_id, min(visit_at) AS online_from, max(last_online_at) AS online_until
      FROM islands
     GROUP BY activity_id, agent_id, user_id, island
), events AS (
    -- One scan of merged (a CTE read twice would be materialized, and a filter on the view
    -- could no longer reach the index on visits.activity_id).
    SELECT m.activity_id, CASE e.delta WHEN 1 THEN m.online_from ELSE m.online_until END AS at,
           e.delta
      FROM merged m CROSS JOIN (VALUES (1), (-1)) AS e (delta)
), running AS (
    SELECT activity_id,
           sum(delta) OVER (PARTITION BY activity_id ORDER BY at, delta DESC
                            ROWS UNBOUNDED PRECEDING) AS online
      FROM events
), peaks AS (
    SELECT activity_id, max(online) AS peak_concurrent_viewers FROM running GROUP BY activity_id
), totals AS (
    SELECT activity_id,
           count(DISTINCT (agent_id, user_id))                               AS viewers,
           count(*)                                                          AS visits,
           sum(duration_minutes)                                             AS minutes_watched,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_minutes)     AS median_minutes,
           min(visit_at)                                                     AS first_visit_at,
           max(last_online_at)                                               AS last_online_at
      FROM visits
     GROUP BY activity_id
)
SELECT t.activity_id,
       a.name   AS activity_name,
       a.status AS activity_status,
       t.viewers,
       t.visits,
       t.minutes_watched,
       t.median_minutes,
       t.first_visit_at,
       t.last_online_at,
       p.peak_concurrent_viewers::bigint AS peak_concurrent_viewers
  FROM totals t
  JOIN peaks p USING (activity_id)
  LEFT JOIN activities a ON a.id = t.activity_id;
