-- Stops syncs from writing activities while agents are forgotten: visits have no foreign key,
-- so a writer's activity rows are the only guard against a visit of a deleted activity.
LOCK TABLE activities IN SHARE ROW EXCLUSIVE MODE
