-- The activity with the most visits (the README queries' example activity).
SELECT activity_id FROM visits GROUP BY activity_id ORDER BY count(*) DESC LIMIT 1
