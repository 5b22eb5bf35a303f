-- Upserts pair $1-$2's visits (one element each of $3-$7, see u), touching only rows that
-- changed; with $8 (set aside) never moves last_online_at back. Counts inserted and updated.
WITH w AS (
  INSERT INTO visits AS v (agent_id, user_id, activity_id, visit_at, last_online_at,
         duration_minutes, extra)
  SELECT $1, $2, u.* FROM UNNEST($3::text[], $4::timestamptz[], $5::timestamptz[],
         $6::int4[], $7::jsonb[]) AS u
  ON CONFLICT (agent_id, user_id, activity_id, visit_at) DO UPDATE SET
         last_online_at = EXCLUDED.last_online_at,
         duration_minutes = EXCLUDED.duration_minutes,
         extra = EXCLUDED.extra, last_changed_at = now()
   WHERE (v.last_online_at, v.duration_minutes, v.extra)
         IS DISTINCT FROM
         (EXCLUDED.last_online_at, EXCLUDED.duration_minutes, EXCLUDED.extra)
     AND NOT ($8 AND EXCLUDED.last_online_at < v.last_online_at)
  RETURNING (xmax = 0) AS inserted)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated
  FROM w
