-- Postgres enforces what a visit is, as szb-sync's own validation does (domain.rs): a viewer is
-- last seen no earlier than they arrived, and online time is never negative.
--
-- A database synced by an earlier version may hold rows that break these rules. They move to
-- sync_rejects first, their raw item rebuilt from the row (visit fields and `extra`; the activity
-- stays in `activities`, and times are rebuilt to the millisecond), so the constraints can be
-- added and nothing is silently lost. A row goes to the pair that synced it: the pair with this
-- visit's activity as its filter when only such a pair has a mark, else the unfiltered pair.

WITH moved AS (
    DELETE FROM visits
     WHERE last_online_at < visit_at OR duration_minutes < 0
    RETURNING agent_id, user_id, activity_id, visit_at, last_online_at, duration_minutes, extra
)
INSERT INTO sync_rejects (agent_id, user_id, activity_filter, raw, reason)
SELECT m.agent_id, m.user_id,
       CASE
           WHEN EXISTS (SELECT 1 FROM sync_state s
                         WHERE (s.agent_id, s.user_id, s.activity_filter)
                               = (m.agent_id, m.user_id, m.activity_id))
            AND NOT EXISTS (SELECT 1 FROM sync_state s
                             WHERE (s.agent_id, s.user_id, s.activity_filter)
                                   = (m.agent_id, m.user_id, ''))
           THEN m.activity_id
           ELSE ''
       END,
       m.extra || jsonb_build_object(
           'visitAt', to_char(m.visit_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'lastOnlineAt', to_char(m.last_online_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'duration', m.duration_minutes,
           'userId', m.user_id,
           'activityId', m.activity_id),
       concat_ws('; ',
           CASE WHEN m.last_online_at < m.visit_at THEN
               format('lastOnlineAt %s is before visitAt %s',
                      to_char(m.last_online_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                      to_char(m.visit_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
           END,
           CASE WHEN m.duration_minutes < 0 THEN
               format('duration %s minutes is negative', m.duration_minutes)
           END)
       || ' (moved out of visits when the check constraints were added)'
  FROM moved m
ON CONFLICT (agent_id, user_id, activity_filter, md5(raw::text)) DO NOTHING;

ALTER TABLE visits
    ADD CONSTRAINT visits_last_online_at_not_before_visit_at CHECK (last_online_at >= visit_at),
    ADD CONSTRAINT visits_duration_minutes_not_negative CHECK (duration_minutes >= 0);
