-- Drops the COPY baseline's table.
DROP TABLE bench_visits_copy
