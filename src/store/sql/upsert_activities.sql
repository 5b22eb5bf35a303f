-- Writes a page's activities (one element each of $1-$16, see u): updates rows that changed
-- and are not older, inserts new ones; returns how many rows it wrote.
WITH u AS (
    SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[],
           $5::int8[], $6::text[], $7::text[], $8::bool[], $9::bool[],
           $10::timestamptz[], $11::timestamptz[], $12::timestamptz[],
           $13::timestamptz[], $14::text[], $15::text[], $16::jsonb[])
        AS u (id, agent_id, subagent_id, category_id, group_id, name, status,
              is_pushing, is_archived, started_at, ended_at, created_at,
              updated_at, push_domain, pull_domain, extra)),
changed AS (
    UPDATE activities a SET
           agent_id = u.agent_id, subagent_id = u.subagent_id,
           category_id = u.category_id, group_id = u.group_id, name = u.name,
           status = u.status, is_pushing = u.is_pushing,
           is_archived = u.is_archived, started_at = u.started_at,
           ended_at = u.ended_at, created_at = u.created_at,
           updated_at = u.updated_at, push_domain = u.push_domain,
           pull_domain = u.pull_domain, extra = u.extra, last_changed_at = now()
      FROM u
     WHERE a.id = u.id
       -- an older copy (seen on an older visit) never overwrites a newer one
       AND (a.updated_at IS NULL OR u.updated_at >= a.updated_at)
       AND (a.agent_id, a.subagent_id, a.category_id, a.group_id, a.name,
            a.status, a.is_pushing, a.is_archived, a.started_at, a.ended_at,
            a.created_at, a.updated_at, a.push_domain, a.pull_domain, a.extra)
           IS DISTINCT FROM
           (u.agent_id, u.subagent_id, u.category_id, u.group_id, u.name,
            u.status, u.is_pushing, u.is_archived, u.started_at, u.ended_at,
            u.created_at, u.updated_at, u.push_domain, u.pull_domain, u.extra)
    RETURNING 1),
added AS (
    INSERT INTO activities AS a (id, agent_id, subagent_id, category_id,
           group_id, name, status, is_pushing, is_archived, started_at,
           ended_at, created_at, updated_at, push_domain, pull_domain, extra)
    SELECT u.* FROM u
     WHERE NOT EXISTS (SELECT 1 FROM activities x WHERE x.id = u.id)
    ON CONFLICT (id) DO UPDATE SET
           agent_id = EXCLUDED.agent_id, subagent_id = EXCLUDED.subagent_id,
           category_id = EXCLUDED.category_id, group_id = EXCLUDED.group_id,
           name = EXCLUDED.name, status = EXCLUDED.status,
           is_pushing = EXCLUDED.is_pushing, is_archived = EXCLUDED.is_archived,
           started_at = EXCLUDED.started_at, ended_at = EXCLUDED.ended_at,
           created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
           push_domain = EXCLUDED.push_domain, pull_domain = EXCLUDED.pull_domain,
           extra = EXCLUDED.extra, last_changed_at = now()
     WHERE (a.updated_at IS NULL OR EXCLUDED.updated_at >= a.updated_at)
       AND (a.agent_id, a.subagent_id, a.category_id, a.group_id, a.name,
            a.status, a.is_pushing, a.is_archived, a.started_at, a.ended_at,
            a.created_at, a.updated_at, a.push_domain, a.pull_domain, a.extra)
           IS DISTINCT FROM
           (EXCLUDED.agent_id, EXCLUDED.subagent_id, EXCLUDED.category_id,
            EXCLUDED.group_id, EXCLUDED.name, EXCLUDED.status,
            EXCLUDED.is_pushing, EXCLUDED.is_archived, EXCLUDED.started_at,
            EXCLUDED.ended_at, EXCLUDED.created_at, EXCLUDED.updated_at,
            EXCLUDED.push_domain, EXCLUDED.pull_domain, EXCLUDED.extra)
    RETURNING 1)
SELECT (SELECT count(*) FROM changed) + (SELECT count(*) FROM added)
