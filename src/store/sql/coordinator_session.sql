-- Sets up the coordinator's connection: each statement is planned with its arrays in view, so
-- a plan cached while sync_state was small and young never scans all of it as it grows.
SET plan_cache_mode = force_custom_plan;
