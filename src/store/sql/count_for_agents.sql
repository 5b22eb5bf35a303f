-- The rows of visits, and the activities they name, of agents $1.
SELECT (SELECT count(*) FROM visits WHERE agent_id = ANY($1)) AS visits,
       (SELECT count(DISTINCT activity_id) FROM visits WHERE agent_id = ANY($1)) AS activities
