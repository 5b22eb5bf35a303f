-- The activity with the most visits (the example activity of docs/tables.md's queries).
SELECT activity_id FROM visits GROUP BY activity_id ORDER BY count(*) DESC LIMIT 1
