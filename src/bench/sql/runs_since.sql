-- The runs after run $1, summed; $2 is the failed outcome.
SELECT count(*) AS runs, count(*) FILTER (WHERE outcome = $2) AS failed,
     coalesce(sum(requests), 0)::int8 AS requests,
     coalesce(sum(pages), 0)::int8 AS pages,
     coalesce(sum(visits_inserted), 0)::int8 AS visits_inserted,
     coalesce(sum(visits_updated), 0)::int8 AS visits_updated,
     coalesce(sum(activities_written), 0)::int8 AS activities_written
FROM sync_runs WHERE id > $1
