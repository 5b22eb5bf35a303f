-- One row per rejected item, not per version of it: an open item whose lastOnlineAt keeps moving
-- is the same item at every read. Rows are pruned with the run history (sync.keep_runs after the
-- item was last read).

-- What makes a rejected item the same item at a later read: its place in the pair's list
-- (visitAt, activityId, userId) when it carries them, else everything but the fields an open
-- visit changes. Hashed, so a huge field never outgrows an index entry.
CREATE FUNCTION sync_reject_item_key(raw jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT md5(CASE
        WHEN jsonb_typeof(raw) <> 'object' THEN raw::text
        WHEN raw ? 'visitAt' AND raw ? 'activityId'
            THEN concat_ws(' ', (raw -> 'visitAt')::text, (raw -> 'activityId')::text,
                           (raw -> 'userId')::text)
        ELSE (raw - 'lastOnlineAt' - 'duration' - 'activity')::text
    END) $$;

COMMENT ON FUNCTION sync_reject_item_key(jsonb) IS 'szb-sync: the identity of a rejected item within its pair''s list (see sync_rejects.item_key)';

ALTER TABLE sync_rejects
    ADD COLUMN item_key text GENERATED ALWAYS AS (sync_reject_item_key(raw)) STORED,
    ADD COLUMN last_seen_at timestamptz;

UPDATE sync_rejects SET last_seen_at = first_seen_at;

ALTER TABLE sync_rejects
    ALTER COLUMN last_seen_at SET NOT NULL,
    ALTER COLUMN last_seen_at SET DEFAULT now();

-- Rows an earlier version kept per version of one item fold into one: the newest version (the
-- highest id), first seen when the oldest was.
WITH item AS (
    SELECT agent_id, user_id, activity_filter, item_key,
           max(id) AS newest, min(first_seen_at) AS first_seen_at,
           max(last_seen_at) AS last_seen_at
      FROM sync_rejects
     GROUP BY agent_id, user_id, activity_filter, item_key
    HAVING count(*) > 1)
UPDATE sync_rejects r
   SET first_seen_at = item.first_seen_at, last_seen_at = item.last_seen_at
  FROM item
 WHERE r.id = item.newest;

DELETE FROM sync_rejects r
 USING sync_rejects newer
 WHERE (newer.agent_id, newer.user_id, newer.activity_filter, newer.item_key)
       = (r.agent_id, r.user_id, r.activity_filter, r.item_key)
   AND newer.id > r.id;

DROP INDEX sync_rejects_item_idx;
CREATE UNIQUE INDEX sync_rejects_item_key_idx
    ON sync_rejects (agent_id, user_id, activity_filter, item_key);
CREATE INDEX sync_rejects_last_seen_at_idx ON sync_rejects (last_seen_at);

COMMENT ON TABLE sync_rejects IS 'items the upstream sent that are not valid visits; one row per item of a pair''s list, its latest version; pruned sync.keep_runs after the item was last read';
COMMENT ON COLUMN sync_rejects.raw IS 'the item as the platform last sent it, verbatim (jsonb; strings Postgres cannot store repaired)';
COMMENT ON COLUMN sync_rejects.reason IS 'why the item is not a valid visit, at its last read';
COMMENT ON COLUMN sync_rejects.item_key IS 'the item''s identity in its pair''s list: md5 of its visitAt, activityId and userId, or of the item without lastOnlineAt, duration and activity when it lacks them';
COMMENT ON COLUMN sync_rejects.last_seen_at IS 'when szb-sync last read the item (the row is pruned sync.keep_runs after that)';
COMMENT ON COLUMN sync_rejects.list_position IS 'the item''s place in the pair''s list by ascending visitAt at its last read, when known';
