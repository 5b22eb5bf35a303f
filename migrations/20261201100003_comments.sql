-- A comment on every table, view and column users see: Metabase, Superset and psql's \d+ show
-- them. The platform doc's own term follows in brackets where it has one (GET
-- /api/v3/agent/:id/user/:userId/stats/visits). A test fails for any column left without one.

COMMENT ON TABLE visits IS 'shangzhibo.tv visit records (访问明细), one row per visit of one user to one activity, keyed by (agent_id, user_id, activity_id, visit_at); rows purged upstream are kept here';
COMMENT ON COLUMN visits.agent_id IS 'the platform account (客户 id, the :id of the API path) the visit was synced from';
COMMENT ON COLUMN visits.user_id IS 'the viewer (用户 ID, userId), a user of that account';
COMMENT ON COLUMN visits.activity_id IS 'the activity visited (活动 ID, activityId); activities has a row for every value (written by szb-sync in the same transaction)';
COMMENT ON COLUMN visits.visit_at IS 'when the visit began (访问时间, visitAt)';
COMMENT ON COLUMN visits.last_online_at IS 'when the viewer was last seen online in this visit (最后在线时间, lastOnlineAt); moves forward while the visit is open';
COMMENT ON COLUMN visits.duration_minutes IS 'online time in whole minutes (在线时长, duration: lastOnlineAt - visitAt), as the platform reports it';
COMMENT ON COLUMN visits.extra IS 'fields of the visit the platform sent that szb-sync does not know yet, verbatim (jsonb)';
COMMENT ON COLUMN visits.first_synced_at IS 'when szb-sync first wrote this row';
COMMENT ON COLUMN visits.last_changed_at IS 'when szb-sync last changed this row (an unchanged re-read leaves it alone)';

COMMENT ON TABLE activities IS 'shangzhibo.tv activities (活动信息, live events), latest version seen by updated_at; a row with only an id is an activity deleted upstream and not seen whole since';
COMMENT ON COLUMN activities.id IS 'the activity (活动 ID, activity.id)';
COMMENT ON COLUMN activities.agent_id IS 'the account that owns the activity (账号 ID, activity.agentId)';
COMMENT ON COLUMN activities.subagent_id IS 'the sub-account that owns the activity (activity.subagentId), if any';
COMMENT ON COLUMN activities.category_id IS 'the activity''s category (活动分类 ID, activity.categoryId)';
COMMENT ON COLUMN activities.group_id IS 'the activity''s group (活动分组 ID, activity.groupId); -1 when in none';
COMMENT ON COLUMN activities.name IS 'the activity''s name (活动名称, activity.name)';
COMMENT ON COLUMN activities.status IS 'push status (活动状态, activity.status): enabled (may push 允许推流) | disabled (may not 禁止推流) | forbidden (forbidden by an administrator 管理员禁止推流)';
COMMENT ON COLUMN activities.is_pushing IS 'whether a stream is being pushed right now (是否在推流, activity.isPushing)';
COMMENT ON COLUMN activities.is_archived IS 'whether the activity is archived (activity.isArchived)';
COMMENT ON COLUMN activities.started_at IS 'when the activity starts (活动开始时间, activity.startedAt)';
COMMENT ON COLUMN activities.ended_at IS 'when the activity ended (活动结束时间, activity.endedAt); NULL while it has not';
COMMENT ON COLUMN activities.created_at IS 'when the activity was created on the platform (活动创建时间, activity.createdAt)';
COMMENT ON COLUMN activities.updated_at IS 'the platform''s own last change (活动更新时间, activity.updatedAt, or updateAt)';
COMMENT ON COLUMN activities.push_domain IS 'the domain streams are pushed to (推流域名, activity.pushDomain)';
COMMENT ON COLUMN activities.pull_domain IS 'the domain viewers play from (拉流域名, activity.pullDomain)';
COMMENT ON COLUMN activities.extra IS 'fields of the activity the platform sent that szb-sync does not know yet, verbatim (jsonb)';
COMMENT ON COLUMN activities.first_synced_at IS 'when szb-sync first wrote this row';
COMMENT ON COLUMN activities.last_changed_at IS 'when szb-sync last changed this row (an unchanged re-read leaves it alone)';

COMMENT ON COLUMN sync_state.agent_id IS 'the pair''s account (客户 id)';
COMMENT ON COLUMN sync_state.user_id IS 'the pair''s user (用户 ID)';
COMMENT ON COLUMN sync_state.activity_filter IS 'the target''s activity_id filter (活动 ID), '''' when none';
COMMENT ON COLUMN sync_state.settled_count IS 'the high-water mark: the first settled_count visits of the pair, by ascending visitAt, can no longer change and are not read again';
COMMENT ON COLUMN sync_state.anchor_visit_at IS 'visitAt of the group right after the settled prefix, used to find the place again; NULL when settled_count is 0';
COMMENT ON COLUMN sync_state.anchor_activity_ids IS 'activity ids of the visits at anchor_visit_at, used with it to find the place again';
COMMENT ON COLUMN sync_state.upstream_total IS 'the visit count the platform reported for the pair at the last run';
COMMENT ON COLUMN sync_state.mark_moved_at IS 'when the mark (settled_count) last moved';
COMMENT ON COLUMN sync_state.created_at IS 'when szb-sync first synced the pair';

COMMENT ON COLUMN sync_runs.id IS 'the run, in start order';
COMMENT ON COLUMN sync_runs.agent_id IS 'the pair''s account (客户 id)';
COMMENT ON COLUMN sync_runs.user_id IS 'the pair''s user (用户 ID)';
COMMENT ON COLUMN sync_runs.activity_filter IS 'the pair''s activity_id filter (活动 ID), '''' when none';
COMMENT ON COLUMN sync_runs.started_at IS 'when the run started';
COMMENT ON COLUMN sync_runs.finished_at IS 'when the run ended; NULL only in rows left running by versions before leases';
COMMENT ON COLUMN sync_runs.requests IS 'API requests the run made';
COMMENT ON COLUMN sync_runs.pages IS 'pages of visits the run read';
COMMENT ON COLUMN sync_runs.visits_inserted IS 'visit rows the run inserted';
COMMENT ON COLUMN sync_runs.visits_updated IS 'visit rows the run changed (an open visit''s lastOnlineAt moved, for example)';
COMMENT ON COLUMN sync_runs.activities_written IS 'activity rows the run inserted or changed';
COMMENT ON COLUMN sync_runs.rejects IS 'items seen for the first time that were not valid visits (see sync_rejects)';
COMMENT ON COLUMN sync_runs.mark_before IS 'the pair''s settled_count when the run started';
COMMENT ON COLUMN sync_runs.mark_after IS 'the pair''s settled_count when the run ended';
COMMENT ON COLUMN sync_runs.error IS 'why the run failed or was interrupted; NULL when it ended ok';

COMMENT ON COLUMN sync_passes.id IS 'the pass, in start order';
COMMENT ON COLUMN sync_passes.started_at IS 'when the pass started';
COMMENT ON COLUMN sync_passes.finished_at IS 'when the pass ended; NULL while it runs';
COMMENT ON COLUMN sync_passes.requests IS 'API requests the pass made, over all its pairs';

COMMENT ON COLUMN sync_rejects.id IS 'the reject, in order of first sight';
COMMENT ON COLUMN sync_rejects.agent_id IS 'the account (客户 id) of the pair that read the item';
COMMENT ON COLUMN sync_rejects.user_id IS 'the user (用户 ID) of the pair that read the item';
COMMENT ON COLUMN sync_rejects.activity_filter IS 'that pair''s activity_id filter (活动 ID), '''' when none';
COMMENT ON COLUMN sync_rejects.raw IS 'the item as the platform sent it, verbatim (jsonb)';
COMMENT ON COLUMN sync_rejects.reason IS 'why the item is not a valid visit';
COMMENT ON COLUMN sync_rejects.list_position IS 'the item''s place in the pair''s list by ascending visitAt when it was seen, when known';
COMMENT ON COLUMN sync_rejects.first_seen_at IS 'when szb-sync first saw the item';

COMMENT ON VIEW visit_details IS 'each visit with its activity''s name and status; a visit of an activity deleted upstream keeps its row, with NULL name and status';
COMMENT ON COLUMN visit_details.agent_id IS 'the platform account (客户 id) the visit was synced from';
COMMENT ON COLUMN visit_details.user_id IS 'the viewer (用户 ID, userId)';
COMMENT ON COLUMN visit_details.activity_id IS 'the activity visited (活动 ID, activityId)';
COMMENT ON COLUMN visit_details.activity_name IS 'the activity''s name (活动名称); NULL when the activity was deleted upstream';
COMMENT ON COLUMN visit_details.activity_status IS 'the activity''s push status (活动状态): enabled | disabled | forbidden; NULL when deleted upstream';
COMMENT ON COLUMN visit_details.visit_at IS 'when the visit began (访问时间, visitAt)';
COMMENT ON COLUMN visit_details.last_online_at IS 'when the viewer was last seen online in this visit (最后在线时间, lastOnlineAt)';
COMMENT ON COLUMN visit_details.duration_minutes IS 'online time in whole minutes (在线时长, duration)';

COMMENT ON VIEW user_daily IS 'per account, user and day (Asia/Shanghai, by visit_at): visits, minutes watched and distinct activities; for another zone, group visit_details by (visit_at AT TIME ZONE ''your zone'')::date';
COMMENT ON COLUMN user_daily.agent_id IS 'the platform account (客户 id)';
COMMENT ON COLUMN user_daily.user_id IS 'the viewer (用户 ID)';
COMMENT ON COLUMN user_daily.day IS 'the calendar day in Asia/Shanghai on which the visits began (访问时间)';
COMMENT ON COLUMN user_daily.visits IS 'visits the user began that day';
COMMENT ON COLUMN user_daily.minutes_watched IS 'sum of those visits'' online minutes (在线时长); a visit counts whole on the day it began';
COMMENT ON COLUMN user_daily.activities IS 'distinct activities (活动 ID) among those visits';

COMMENT ON VIEW activity_summary IS 'per activity with at least one visit: viewers, visits, minutes, first and last visit, and peak concurrent viewers';
COMMENT ON COLUMN activity_summary.activity_id IS 'the activity (活动 ID)';
COMMENT ON COLUMN activity_summary.activity_name IS 'the activity''s name (活动名称); NULL when deleted upstream';
COMMENT ON COLUMN activity_summary.activity_status IS 'the activity''s push status (活动状态); NULL when deleted upstream';
COMMENT ON COLUMN activity_summary.viewers IS 'distinct viewers: (agent_id, user_id) pairs with a visit of the activity';
COMMENT ON COLUMN activity_summary.visits IS 'visits of the activity';
COMMENT ON COLUMN activity_summary.minutes_watched IS 'sum of the visits'' online minutes (在线时长)';
COMMENT ON COLUMN activity_summary.median_minutes IS 'median online minutes of one visit (percentile_cont(0.5): the mean of the two middle visits when their count is even)';
COMMENT ON COLUMN activity_summary.first_visit_at IS 'the earliest visit_at (访问时间) of the activity';
COMMENT ON COLUMN activity_summary.last_online_at IS 'the latest last_online_at (最后在线时间) of the activity: the last moment anyone was seen watching';
COMMENT ON COLUMN activity_summary.peak_concurrent_viewers IS 'the most distinct viewers online at one instant, each visit taken as the closed interval [visit_at, last_online_at]; a user''s overlapping visits count once, and intervals that touch count as concurrent';
