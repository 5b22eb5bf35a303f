-- The planner's estimate of the rows of visits, in its plan (no scan).
EXPLAIN (FORMAT JSON) SELECT 1 FROM visits
