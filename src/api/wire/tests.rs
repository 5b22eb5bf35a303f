//! The decoder's tests: pages as the platform writes them, and as it might break them.

use super::*;
use crate::domain::Order;

/// The doc's sample response, verbatim.
const SAMPLE: &str = r#"{
"pager":{
"page":1,
"pageSize":10,
"total":2
},
"items":[{
    "activity":{
        "isArchived":false,
        "isPushing":false,
        "id":"10096289",
        "agentId":105131,
        "subagentId":null,
        "categoryId":1,
        "name":"这是一场直播",
        "status":"disabled",
        "startedAt":"2020-06-24T00:00:00.000Z",
        "endedAt":"2020-06-24T05:36:51.878Z",
        "pushDomain":"push.shangzhibo.tv",
        "pullDomain":"play.shangzhibo.tv",
        "groupId":-1,
        "createdAt":"2020-06-22T03:06:29.000Z",
        "updatedAt":"2020-06-24T05:37:26.322Z"
    },
    "visitAt":"2020-06-24T04:28:02.000Z",
    "lastOnlineAt":"2020-06-24T04:28:05.000Z",
    "duration":0,
    "userId":15460259,
    "activityId":"10096289"
}, {
    "activity":{
        "isArchived":false,
        "isPushing":false,
        "id":"10096289",
        "agentId":105131,
        "subagentId":null,
        "categoryId":1,
        "name":"这是一场直播",
        "status":"disabled",
        "startedAt":"2020-06-24T00:00:00.000Z",
        "endedAt":"2020-06-24T05:36:51.878Z",
        "pushDomain":"push.shangzhibo.tv",
        "pullDomain":"play.shangzhibo.tv",
        "groupId":-1,
        "createdAt":"2020-06-22T03:06:29.000Z",
        "updatedAt":"2020-06-24T05:37:26.322Z"
    },
    "visitAt":"2020-06-24T01:40:01.000Z",
    "lastOnlineAt":"2020-06-24T01:44:04.000Z",
    "duration":4,
    "userId":15460259,
    "activityId":"10096289"
}]
}"#;

fn pair() -> PairKey {
    PairKey::new(105131, 15460259, None)
}

fn window() -> Window {
    Window {
        page: 1,
        page_size: 10,
        order: Order::Desc,
    }
}

fn t(s: &str) -> DateTime<Utc> {
    time(s).unwrap()
}

#[test]
fn the_docs_sample_decodes_exactly() {
    let Decoded { total, entries, .. } =
        decode_page(SAMPLE.as_bytes(), &pair(), &window(), Utc::now()).unwrap();
    assert_eq!(total, 2);
    let Entry::Visit { visit, activity } = &entries[1] else {
        panic!("rejected: {:?}", entries[1]);
    };
    assert_eq!(
        (
            visit.agent_id(),
            visit.user_id(),
            visit.activity_id(),
            visit.visit_at(),
            visit.last_online_at(),
            visit.duration_minutes(),
        ),
        (
            105131,
            15460259,
            "10096289",
            t("2020-06-24T01:40:01.000Z"),
            t("2020-06-24T01:44:04.000Z"),
            4,
        )
    );
    assert!(visit.extra().is_empty());
    assert_eq!(
        activity.as_deref().unwrap(),
        &Activity {
            id: "10096289".into(),
            agent_id: Some(105131),
            subagent_id: None,
            category_id: Some(1),
            group_id: Some(-1),
            name: Some("这是一场直播".into()),
            status: Some("disabled".into()),
            is_pushing: Some(false),
            is_archived: Some(false),
            started_at: Some(t("2020-06-24T00:00:00.000Z")),
            ended_at: Some(t("2020-06-24T05:36:51.878Z")),
            created_at: Some(t("2020-06-22T03:06:29.000Z")),
            updated_at: Some(t("2020-06-24T05:37:26.322Z")),
            push_domain: Some("push.shangzhibo.tv".into()),
            pull_domain: Some("play.shangzhibo.tv".into()),
            extra: Map::new(),
        }
    );
    assert!(matches!(&entries[0], Entry::Visit { .. }));
}

fn one_item(item: Value) -> Entry {
    let body =
        serde_json::json!({"pager": {"page": 1, "pageSize": 10, "total": 1}, "items": [item]});
    let mut page =
        decode_page(body.to_string().as_bytes(), &pair(), &window(), Utc::now()).unwrap();
    page.entries.remove(0)
}

fn sample_item() -> Value {
    let v: Value = serde_json::from_str(SAMPLE).unwrap();
    v["items"][0].clone()
}

#[test]
fn update_at_spelling_and_unknown_fields_are_kept() {
    let mut item = sample_item();
    let a = item["activity"].as_object_mut().unwrap();
    let updated = a.remove("updatedAt").unwrap();
    a.insert("updateAt".into(), updated);
    a.insert("coverUrl".into(), "x.png".into());
    item["watchedOn"] = "mobile".into();
    let Entry::Visit { visit, activity } = one_item(item) else {
        panic!()
    };
    let activity = activity.unwrap();
    assert_eq!(activity.updated_at, Some(t("2020-06-24T05:37:26.322Z")));
    assert_eq!(activity.extra["coverUrl"], "x.png");
    assert_eq!(visit.extra()["watchedOn"], "mobile");
}

#[test]
fn null_activity_and_null_ended_at_are_accepted() {
    let mut item = sample_item();
    item["activity"]["endedAt"] = Value::Null;
    let Entry::Visit { activity, .. } = one_item(item.clone()) else {
        panic!()
    };
    assert_eq!(activity.unwrap().ended_at, None);
    item["activity"] = Value::Null;
    assert!(matches!(
        one_item(item),
        Entry::Visit { activity: None, .. }
    ));
}

#[test]
fn bad_items_become_rejects_that_name_the_problem() {
    let cases = [
        ("visitAt", Value::from("yesterday"), "visitAt"),
        ("userId", Value::Null, "userId"),
        ("duration", Value::from("4"), "duration"),
        ("duration", Value::from(99_999_999), "duration"),
        ("userId", Value::from(1), "differs from the requested user"),
        ("activityId", Value::from(""), "activityId is empty"),
        ("duration", Value::from(-1), "duration -1 minutes"),
    ];
    for (field, value, expect) in cases {
        let mut item = sample_item();
        if value.is_null() {
            item.as_object_mut().unwrap().remove(field);
        } else {
            item[field] = value;
        }
        match one_item(item) {
            Entry::Rejected { reject, .. } => {
                assert!(reject.reason.contains(expect), "{field}: {}", reject.reason)
            }
            other => panic!("{field} accepted: {other:?}"),
        }
    }
}

#[test]
fn last_online_a_year_before_visit_is_rejected_naming_both_fields() {
    let mut item = sample_item();
    item["visitAt"] = "2021-06-24T04:28:02.000Z".into();
    item["lastOnlineAt"] = "2020-06-24T04:28:05.000Z".into();
    item["duration"] = 5.into();
    let Entry::Rejected {
        reject, visit_at, ..
    } = one_item(item)
    else {
        panic!("a visit that ends before it starts was accepted");
    };
    assert!(
        reject.reason.contains("lastOnlineAt") && reject.reason.contains("visitAt"),
        "{}",
        reject.reason
    );
    assert_eq!(visit_at, Some(t("2021-06-24T04:28:02.000Z")));
}

#[test]
fn a_capped_page_size_says_which_setting_to_change() {
    let body = SAMPLE.replace("\"pageSize\":10", "\"pageSize\":5");
    let err = decode_page(body.as_bytes(), &pair(), &window(), Utc::now()).unwrap_err();
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("set api.page_size = 5"), "{err}");
}

#[test]
fn a_pager_that_contradicts_the_items_is_an_error() {
    let body = SAMPLE.replace("\"total\":2", "\"total\":0");
    let err = decode_page(body.as_bytes(), &pair(), &window(), Utc::now()).unwrap_err();
    assert!(matches!(err, ApiError::Inconsistent(_)), "{err}");
}

#[test]
fn html_and_deep_nesting_are_decode_errors() {
    let err = decode_page(b"<html>oops</html>", &pair(), &window(), Utc::now()).unwrap_err();
    assert!(err.to_string().contains("<html>oops"), "{err}");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let err = decode_page(deep.as_bytes(), &pair(), &window(), Utc::now()).unwrap_err();
    assert!(matches!(err, ApiError::Decode { .. }));
}
