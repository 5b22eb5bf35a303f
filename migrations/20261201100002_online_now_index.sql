-- "Who is online right now" (last_online_at in the last minutes) skips every block range of
-- visits whose latest last_online_at is older. A BRIN index, not a B-tree: recent values only
-- sit in rows written or updated lately, at the end of the table, so a summary per 128 pages
-- finds them. It costs 3% of COPY's rate into visits (a B-tree on this column cost 23%) and
-- takes kilobytes. Ranges not summarized yet are always read: `autosummarize` has autovacuum
-- summarize each range once it fills, so right after a large first sync the query scans until
-- autovacuum has been by. Measured with `szb-sync bench --only "1M visits, 200"`: see the
-- README's Performance section.
CREATE INDEX visits_last_online_at_idx ON visits USING brin (last_online_at) WITH (autosummarize = on);
