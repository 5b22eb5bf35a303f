-- Records owner $1's finished runs ($2-$19, $25, $27-$31: one element each, see f), ends their
-- leases; $20/$21/$26 ok/failed/interrupted, $22/$23 backoff first/max s, $24 after failures.
WITH f AS (
         SELECT * FROM UNNEST($2::int8[], $3::int8[], $4::text[], $5::text[],
                $6::int4[], $7::int4[], $8::int4[], $9::int4[], $10::int4[],
                $11::int4[], $12::int8[], $13::int8[], $14::jsonb[], $15::text[],
                $16::bool[], $17::bool[], $18::timestamptz[], $19::bool[],
                $27::int4[], $25::timestamptz[], $28::text[], $29::float8[],
                $30::timestamptz[], $31::int4[])
             AS f (agent_id, user_id, activity_filter, outcome, requests, pages,
                   visits_inserted, visits_updated, activities_written, rejects,
                   mark_before, mark_after, recoveries, error, refused, notable,
                   started_at, locked, strings_cleaned, next_due, due_reason,
                   arrival_rate, rate_at, found_new)),
     runs AS (
         INSERT INTO sync_runs (agent_id, user_id, activity_filter, started_at,
                finished_at, outcome, requests, pages, visits_inserted,
                visits_updated, activities_written, rejects, mark_before,
                mark_after, recoveries, error, strings_cleaned)
         SELECT agent_id, user_id, activity_filter, started_at, now(), outcome,
                requests, pages, visits_inserted, visits_updated,
                activities_written, rejects, mark_before, mark_after,
                ARRAY(SELECT jsonb_array_elements_text(recoveries)), error,
                strings_cleaned
           FROM f WHERE notable),
     state AS (
         UPDATE sync_state s SET lease_owner = NULL, lease_expires_at = NULL,
                last_run_at = now(), last_outcome = f.outcome,
                last_success_at = CASE WHEN f.outcome = $20 THEN now()
                                       ELSE s.last_success_at END,
                last_error = coalesce(f.error, s.last_error),
                last_error_at = CASE WHEN f.error IS NOT NULL THEN now()
                                     ELSE s.last_error_at END,
                failures_in_row = CASE
                    WHEN f.outcome = $21 THEN s.failures_in_row + 1
                    WHEN f.outcome = $20 THEN 0
                    ELSE s.failures_in_row END,
                -- Backoff doubles from failure_backoff with each failure past
                -- the first that counts (the first for a refused token), up to
                -- the cap; every other ended run is due when the schedule said. A NULL
                -- refused is a token the platform does not know (401), which the
                -- next configuration may fix: it never backs off.
                next_due_at = CASE
                    WHEN f.outcome = $21 AND f.refused IS NOT NULL
                         AND (f.refused OR s.failures_in_row + 1 >= $24)
                    THEN greatest(f.next_due, now() + make_interval(secs => least(
                         $22 * power(2, least(greatest(s.failures_in_row + 1
                             - CASE WHEN f.refused THEN 1 ELSE $24 END, 0), 30)),
                         $23)))
                    WHEN f.outcome = $26 THEN s.next_due_at
                    ELSE f.next_due END,
                due_reason = CASE
                    WHEN f.outcome = $21 AND f.refused IS NOT NULL
                         AND (f.refused OR s.failures_in_row + 1 >= $24) THEN 'backoff'
                    WHEN f.outcome = $26 THEN s.due_reason
                    ELSE f.due_reason END,
                arrival_rate = f.arrival_rate, rate_at = f.rate_at,
                last_found_new = f.found_new
           FROM f
          WHERE (s.agent_id, s.user_id, s.activity_filter)
                = (f.agent_id, f.user_id, f.activity_filter)
            AND s.lease_owner = $1
      RETURNING 1)
SELECT (SELECT count(*) FROM state) AS kept,
       (SELECT count(*) FILTER (WHERE pg_advisory_unlock(szb_pair_lock_key(f.agent_id, f.user_id,
                                                                            f.activity_filter)))
          FROM f WHERE f.locked) AS unlocked
