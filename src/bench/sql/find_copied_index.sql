-- The COPY baseline table's index over the same columns as index $1.
SELECT c.indexrelid::regclass::text FROM pg_index c, pg_index o
WHERE c.indrelid = 'bench_visits_copy'::regclass
  AND o.indexrelid = to_regclass($1)
  AND c.indkey::text = o.indkey::text AND c.indexprs IS NULL
