-- What autovacuum does soon after a large insert, at once, before the reads are timed.
VACUUM (ANALYZE) visits
