-- The earliest due time of any pair after now and before $1 (the next tick); NULL when none.
SELECT min(next_due_at) FROM sync_state WHERE next_due_at > now() AND next_due_at < $1
