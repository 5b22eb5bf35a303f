-- Postgres enforces what a visit is, as szb-sync's own validation does (domain.rs): a viewer is
-- last seen no earlier than they arrived, and online time is never negative.
--
-- A database synced by an earlier version may hold rows that break these rules. They move to
-- sync_rejects first, their raw item rebuilt from the row (visit fields and `extra`; the activity
-- stays in `activities`), so the constraints can be added and nothing is silently lost.

WITH moved AS (
    DELETE FROM visits
     WHERE last_online_at < visit_at OR duration_minutes < 0
    RETURNING agent_id, user_id, activity_id, visit_at, last_online_at, duration_minutes, extra
)
INSERT INTO sync_rejects (agent_id, user_id, activity_filter, raw, reason)
SELECT agent_id, user_id, '',
       extra || jsonb_build_object(
           'visitAt', to_char(visit_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'lastOnlineAt', to_char(last_online_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'duration', duration_minutes,
           'userId', user_id,
           'activityId', activity_id),
       CASE
           WHEN last_online_at < visit_at THEN
               format('lastOnlineAt %s is before visitAt %s', last_online_at, visit_at)
           ELSE format('duration %s minutes is negative', duration_minutes)
       END || ' (moved out of visits when the check constraints were added)'
  FROM moved
ON CONFLICT (agent_id, user_id, activity_filter, md5(raw::text)) DO NOTHING;

ALTER TABLE visits
    ADD CONSTRAINT visits_last_online_at_not_before_visit_at CHECK (last_online_at >= visit_at),
    ADD CONSTRAINT visits_duration_minutes_not_negative CHECK (duration_minutes >= 0);
