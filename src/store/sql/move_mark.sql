-- Moves pair $1-$3's mark to $4-$6 (settled, anchor visit_at and activity ids) and upstream
-- total $7, if owner $8 still leases it: the fence of a page.
UPDATE sync_state s SET settled_count = $4, anchor_visit_at = $5,
       anchor_activity_ids = $6, upstream_total = $7,
       mark_moved_at = CASE
           WHEN (s.settled_count, s.anchor_visit_at) IS DISTINCT FROM ($4, $5)
           THEN now() ELSE s.mark_moved_at END
 WHERE agent_id = $1 AND user_id = $2 AND activity_filter = $3
   AND lease_owner = $8
