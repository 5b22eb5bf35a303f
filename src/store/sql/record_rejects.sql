-- Records pair $1-$3's rejected items (one element each of $4-$6: raw, reason, list position),
-- one row per item; counts the items seen for the first time.
WITH w AS (
  INSERT INTO sync_rejects (agent_id, user_id, activity_filter, raw, reason,
         list_position)
  SELECT DISTINCT ON (sync_reject_item_key(u.raw)) $1, $2, $3, u.*
    FROM UNNEST($4::jsonb[], $5::text[], $6::int8[]) AS u (raw, reason, pos)
   ORDER BY sync_reject_item_key(u.raw), u.pos DESC NULLS LAST
  ON CONFLICT (agent_id, user_id, activity_filter, item_key) DO UPDATE SET
         raw = EXCLUDED.raw, reason = EXCLUDED.reason,
         list_position = EXCLUDED.list_position, last_seen_at = now()
  RETURNING (xmax = 0) AS inserted)
SELECT count(*) FILTER (WHERE inserted) FROM w
