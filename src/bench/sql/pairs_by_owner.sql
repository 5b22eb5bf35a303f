-- Pair runs per process, over every pass.
SELECT coalesce(owner, ''), sum(pairs)::int8 FROM sync_passes
GROUP BY owner ORDER BY owner
