-- Opens the row of a pass by owner $2 with outcome $1 (running) for pairs due by $3 (NULL: all);
-- returns its id and when it started.
INSERT INTO sync_passes (outcome, owner, due_by) VALUES ($1, $2, $3)
RETURNING id, started_at
