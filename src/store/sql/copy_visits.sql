-- Copies new visits in, in binary: no row can conflict (see pages.rs).
COPY visits (agent_id, user_id, activity_id, visit_at, last_online_at,
             duration_minutes, extra) FROM STDIN (FORMAT binary)
