-- Sets up the coordinator's connection: every statement on it looks pairs up by key, and a
-- plan cached with a small young table's statistics would scan all of sync_state as it grows.
SET plan_cache_mode = force_custom_plan;
SET enable_seqscan = off;
