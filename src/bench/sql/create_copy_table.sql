-- The COPY baseline's table: empty, shaped like visits, its indexes included.
DROP TABLE IF EXISTS bench_visits_copy;
CREATE TABLE bench_visits_copy (LIKE visits INCLUDING ALL);
