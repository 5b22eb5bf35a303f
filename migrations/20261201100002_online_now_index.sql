-- "Who is online right now" (last_online_at in the last minutes) skips every block range of
-- visits whose latest last_online_at is older. A BRIN index, not a B-tree: recent values only
-- sit in rows written or updated lately, at the end of the table, so a summary per 128 pages
-- finds them, costs next to nothing on the first sync's COPY (a B-tree on this column cost a
-- quarter of COPY's rate) and takes kilobytes. `autosummarize` summarizes each range once it
-- fills, so a large first sync is covered before the next vacuum. Measured with
-- `szb-sync bench --only "1M visits, 200"`: see the README's Performance section.
CREATE INDEX visits_last_online_at_idx ON visits USING brin (last_online_at) WITH (autosummarize = on);
