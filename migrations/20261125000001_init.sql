-- szb-sync schema. Tables and columns here are a contract with BI users: add, never rename.
-- Every timestamp is timestamptz (stored in UTC).

-- Live events of the platform, as embedded in visits. A row holding only an id is an activity
-- seen through a visit whose `activity` was null (deleted upstream) and not seen whole since.
CREATE TABLE activities (
    id              text PRIMARY KEY,
    agent_id        bigint,
    subagent_id     bigint,
    category_id     bigint,
    group_id        bigint,
    name            text,
    status          text,
    is_pushing      boolean,
    is_archived     boolean,
    started_at      timestamptz,
    ended_at        timestamptz,
    created_at      timestamptz,
    updated_at      timestamptz,
    push_domain     text,
    pull_domain     text,
    extra           jsonb NOT NULL DEFAULT '{}'::jsonb,
    first_synced_at timestamptz NOT NULL DEFAULT now(),
    last_changed_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE activities IS 'shangzhibo.tv activities (live events), latest version seen by updated_at';
COMMENT ON COLUMN activities.updated_at IS 'the platform''s own last change (updatedAt, or updateAt)';
COMMENT ON COLUMN activities.extra IS 'fields the platform sent that szb-sync does not know yet, verbatim';
COMMENT ON COLUMN activities.first_synced_at IS 'when szb-sync first wrote this row';
COMMENT ON COLUMN activities.last_changed_at IS 'when szb-sync last changed this row (not touched by unchanged re-reads)';

-- One visit of one user to one activity. The upstream has no visit id: the natural key is
-- (agent_id, user_id, activity_id, visit_at).
CREATE TABLE visits (
    agent_id         bigint      NOT NULL,
    user_id          bigint      NOT NULL,
    activity_id      text        NOT NULL REFERENCES activities (id),
    visit_at         timestamptz NOT NULL,
    last_online_at   timestamptz NOT NULL,
    duration_minutes integer     NOT NULL,
    extra            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    first_synced_at  timestamptz NOT NULL DEFAULT now(),
    last_changed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, user_id, activity_id, visit_at)
);

CREATE INDEX visits_activity_id_visit_at_idx ON visits (activity_id, visit_at);

COMMENT ON TABLE visits IS 'shangzhibo.tv visit records; rows purged upstream are kept here';
COMMENT ON COLUMN visits.duration_minutes IS 'online time in whole minutes (lastOnlineAt - visitAt), as the platform reports it';

-- The high-water mark of each (agent, user[, activity filter]) pair.
CREATE TABLE sync_state (
    agent_id            bigint  NOT NULL,
    user_id             bigint  NOT NULL,
    activity_filter     text    NOT NULL DEFAULT '',
    settled_count       bigint  NOT NULL DEFAULT 0 CHECK (settled_count >= 0),
    anchor_visit_at     timestamptz,
    anchor_activity_ids text[]  NOT NULL DEFAULT '{}',
    upstream_total      bigint,
    mark_moved_at       timestamptz NOT NULL DEFAULT now(),
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, user_id, activity_filter),
    CHECK ((settled_count = 0) = (anchor_visit_at IS NULL))
);

COMMENT ON TABLE sync_state IS 'per-pair high-water mark: the first settled_count visits (ascending visitAt) can no longer change';
COMMENT ON COLUMN sync_state.activity_filter IS 'the target''s activity_id filter, '''' when none';
COMMENT ON COLUMN sync_state.anchor_visit_at IS 'visitAt of the group right after the settled prefix, used to find the place again';

-- One row per sync run per pair.
CREATE TABLE sync_runs (
    id                 bigserial PRIMARY KEY,
    agent_id           bigint  NOT NULL,
    user_id            bigint  NOT NULL,
    activity_filter    text    NOT NULL DEFAULT '',
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    outcome            text    NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'ok', 'failed', 'interrupted', 'skipped')),
    requests           integer NOT NULL DEFAULT 0,
    pages              integer NOT NULL DEFAULT 0,
    visits_inserted    integer NOT NULL DEFAULT 0,
    visits_updated     integer NOT NULL DEFAULT 0,
    activities_written integer NOT NULL DEFAULT 0,
    rejects            integer NOT NULL DEFAULT 0,
    mark_before        bigint,
    mark_after         bigint,
    recoveries         text[]  NOT NULL DEFAULT '{}',
    error              text
);

CREATE INDEX sync_runs_pair_started_idx ON sync_runs (agent_id, user_id, activity_filter, started_at DESC);

COMMENT ON COLUMN sync_runs.outcome IS 'running | ok | failed | interrupted (shutdown or crash) | skipped (another process held the pair)';
COMMENT ON COLUMN sync_runs.recoveries IS 'times the walk had to find its place again (purges, late data)';

-- Upstream items that failed validation, kept raw with the reason.
CREATE TABLE sync_rejects (
    id              bigserial PRIMARY KEY,
    agent_id        bigint NOT NULL,
    user_id         bigint NOT NULL,
    activity_filter text   NOT NULL DEFAULT '',
    raw             jsonb  NOT NULL,
    reason          text   NOT NULL,
    list_position   bigint,
    first_seen_at   timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX sync_rejects_item_idx
    ON sync_rejects (agent_id, user_id, activity_filter, md5(raw::text));

COMMENT ON TABLE sync_rejects IS 'items the upstream sent that are not valid visits; one row per distinct item';
