-- The foreign key from visits to activities is dropped: it checked every inserted visit one by
-- one, and cost 40% of a first sync's time (1,000,000 visits: 12.8 s with it, 9.2 s without,
-- measured with `szb-sync bench` on 2 cores). The invariant stays: szb-sync writes a visit's
-- activity row (whole, or its id alone when the platform sent none) in the same transaction as
-- the visit, before it, and never deletes an activity a visit refers to. The tests check it
-- on the tables after every sync they run.
ALTER TABLE visits DROP CONSTRAINT IF EXISTS visits_activity_id_fkey;

COMMENT ON COLUMN visits.activity_id IS 'the activity visited; activities has a row for every value (written by szb-sync in the same transaction)';
