-- The process holding the most leases now, and how many it holds.
SELECT lease_owner, count(*) FROM sync_state WHERE lease_owner IS NOT NULL
GROUP BY lease_owner ORDER BY count(*) DESC LIMIT 1
