-- "Who is online right now" (last_online_at in the last minutes) reads the newest edge of this
-- index instead of every visit. Measured with `szb-sync bench --only "1M visits, 200"`: see the
-- README's Performance section for what it saves on reads and costs on the first sync.
CREATE INDEX visits_last_online_at_idx ON visits (last_online_at);
