-- The passes of each tick due after $1: how many, finished, pairs, requests, the longest.
SELECT due_by, count(*), count(finished_at), sum(pairs)::int8, sum(requests)::int8,
     coalesce(max(extract(epoch FROM finished_at - started_at)), 0)::float8
FROM sync_passes WHERE due_by > $1 GROUP BY due_by ORDER BY due_by
