//! The JSON as the platform sends it, and its decoding into [`Entry`] values. Nothing here
//! leaves the API module: the rest of the crate sees only domain types.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::{ApiError, snippet};
use crate::domain::{Activity, Entry, PairKey, Reject, Visit, VisitParts, Window};

/// The usual page, decoded in one pass: every item a valid visit.
#[derive(Deserialize)]
struct FastEnvelope<'a> {
    pager: Pager,
    #[serde(borrow)]
    items: Vec<WireVisit<'a>>,
}

/// Any page: items stay raw until each is validated on its own, so one bad item does not sink
/// the page.
#[derive(Deserialize)]
struct Envelope<'a> {
    pager: Pager,
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pager {
    page: Option<i64>,
    page_size: Option<i64>,
    total: i64,
}

/// One item, decoded in one pass: known fields borrowed from the body where they hold no
/// escapes, unknown ones collected only when there are any (so a usual item allocates nothing
/// here), the activity kept raw for [`ActivityCache`].
struct WireVisit<'a> {
    visit_at: Cow<'a, str>,
    last_online_at: Cow<'a, str>,
    duration: i64,
    user_id: i64,
    activity_id: Cow<'a, str>,
    activity: Option<&'a RawValue>,
    extra: Map<String, Value>,
}

impl<'de: 'a, 'a> Deserialize<'de> for WireVisit<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(WireVisitVisitor(std::marker::PhantomData))
    }
}

struct WireVisitVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for WireVisitVisitor<'a> {
    type Value = WireVisit<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a visit object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        fn set<T, E: de::Error>(
            slot: &mut Option<T>,
            value: T,
            name: &'static str,
        ) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let (mut visit_at, mut last_online_at, mut duration) = (None, None, None);
        let (mut user_id, mut activity_id, mut activity) = (None, None, None);
        let mut extra = Map::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "visitAt" => set(&mut visit_at, map.next_value::<Cow<'de, str>>()?, "visitAt")?,
                "lastOnlineAt" => set(
                    &mut last_online_at,
                    map.next_value::<Cow<'de, str>>()?,
                    "lastOnlineAt",
                )?,
                "duration" => set(&mut duration, map.next_value::<i64>()?, "duration")?,
                "userId" => set(&mut user_id, map.next_value::<i64>()?, "userId")?,
                "activityId" => set(
                    &mut activity_id,
                    map.next_value::<Cow<'de, str>>()?,
                    "activityId",
                )?,
                "activity" => set(
                    &mut activity,
                    map.next_value::<Option<&'de RawValue>>()?,
                    "activity",
                )?,
                _ => {
                    extra.insert(key.into_owned(), map.next_value::<Value>()?);
                }
            }
        }
        Ok(WireVisit {
            visit_at: visit_at.ok_or_else(|| de::Error::missing_field("visitAt"))?,
            last_online_at: last_online_at
                .ok_or_else(|| de::Error::missing_field("lastOnlineAt"))?,
            duration: duration.ok_or_else(|| de::Error::missing_field("duration"))?,
            user_id: user_id.ok_or_else(|| de::Error::missing_field("userId"))?,
            activity_id: activity_id.ok_or_else(|| de::Error::missing_field("activityId"))?,
            activity: activity.flatten(),
            extra,
        })
    }
}

/// Activities already decoded in this page, by their raw JSON: most items of a page embed one
/// of a few activities, byte for byte the same.
#[derive(Default)]
struct ActivityCache<'a> {
    by_raw: FxHashMap<&'a str, Arc<Activity>>,
}

impl<'a> ActivityCache<'a> {
    fn get(&mut self, raw: &'a RawValue) -> Result<Arc<Activity>, String> {
        if let Some(a) = self.by_raw.get(raw.get()) {
            return Ok(Arc::clone(a));
        }
        let a: WireActivity = typed(raw.get(), "activity")?;
        let extra = unknown_fields(raw.get(), ACTIVITY_FIELDS)?;
        let a = activity(a, extra)?;
        let texts = [&a.name, &a.status, &a.push_domain, &a.pull_domain];
        if a.id.contains('\0')
            || texts
                .iter()
                .any(|t| t.as_ref().is_some_and(|t| t.contains('\0')))
            || holds_nul(&a.extra)
        {
            // Only the usual page's single pass meets one: the page is then repaired.
            return Err("activity holds a NUL".to_owned());
        }
        let a = Arc::new(a);
        self.by_raw.insert(raw.get(), Arc::clone(&a));
        Ok(a)
    }
}

const ACTIVITY_FIELDS: &[&str] = &[
    "id",
    "agentId",
    "subagentId",
    "categoryId",
    "groupId",
    "name",
    "status",
    "isPushing",
    "isArchived",
    "startedAt",
    "endedAt",
    "createdAt",
    "updatedAt",
    "updateAt",
    "pushDomain",
    "pullDomain",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireActivity {
    id: String,
    agent_id: Option<i64>,
    subagent_id: Option<i64>,
    category_id: Option<i64>,
    group_id: Option<i64>,
    name: Option<String>,
    status: Option<String>,
    is_pushing: Option<bool>,
    is_archived: Option<bool>,
    started_at: Option<String>,
    ended_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    /// The doc's table spells it `updateAt`; its sample says `updatedAt`. Accept both.
    update_at: Option<String>,
    push_domain: Option<String>,
    pull_domain: Option<String>,
}

/// Deserializes `T` from one JSON object, with the failing field's path in the error.
fn typed<'a, T: Deserialize<'a>>(json: &'a str, prefix: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        match (prefix, path.as_str()) {
            ("", _) => e.to_string(),
            (p, ".") => format!("{p}: {}", e.inner()),
            (p, path) => format!("{p}.{path}: {}", e.inner()),
        }
    })
}

/// The fields of a JSON object this version does not know, kept verbatim.
fn unknown_fields(json: &str, known: &[&str]) -> Result<Map<String, Value>, String> {
    let all: Vec<(String, &RawValue)> =
        serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(json)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .collect();
    all.into_iter()
        .map(|(k, v)| Ok((k, serde_json::from_str(v.get()).map_err(|e| e.to_string())?)))
        .collect()
}

/// A page decoded: the list's total, its entries, and how many strings (and numbers) in it had
/// to be repaired to be stored ([`super::repair`]).
#[derive(Debug)]
pub(super) struct Decoded {
    pub total: i64,
    pub entries: Vec<Entry>,
    pub cleaned: u64,
}

/// Decodes and checks a whole page; items that fail validation become rejects.
pub(super) fn decode_page(
    body: &[u8],
    pair: &PairKey,
    window: &Window,
    now: DateTime<Utc>,
) -> Result<Decoded, ApiError> {
    let mut activities = ActivityCache::default();
    let fast = decode_fast(body, pair, now, &mut activities);
    // Anything the usual page cannot be is judged on the repaired body, item by item.
    let (repaired_body, cleaned);
    let (pager, entries) = match fast {
        Some(decoded) => {
            cleaned = 0;
            decoded
        }
        None => {
            (repaired_body, cleaned) = super::repair::repair(body);
            decode_each(&repaired_body, pair, now, &mut ActivityCache::default())?
        }
    };
    let n = entries.len() as i64;
    let asked = i64::from(window.page_size);
    let offset = window.offset();
    let problem = if pager.page.is_some_and(|p| p != window.page) {
        Some(format!(
            "asked for page {}, pager says page {}",
            window.page,
            pager
                .page
                .map_or_else(|| "none".to_owned(), |p| p.to_string())
        ))
    } else if let Some(got) = pager.page_size.filter(|s| *s != asked) {
        return Err(ApiError::PageSizeCapped { asked, got });
    } else if n > asked {
        Some(format!("{n} items on a page of {asked}"))
    } else if pager.total < 0 {
        Some(format!("negative total {}", pager.total))
    } else if n > 0 && offset + n > pager.total {
        Some(format!(
            "{} at offset {offset} but total {}",
            crate::plural::plural(n, "item", "items"),
            pager.total
        ))
    } else if n < asked && offset + n < pager.total {
        Some(format!(
            "short page of {n} at offset {offset} but total {}",
            pager.total
        ))
    } else {
        None
    };
    if let Some(p) = problem {
        return Err(ApiError::Inconsistent(p));
    }
    Ok(Decoded {
        total: pager.total,
        entries,
        cleaned,
    })
}

/// The usual page in one pass, or `None` when anything in it is not a valid visit (the page is
/// then decoded item by item, to keep bad items as rejects and name what is wrong).
fn decode_fast<'a>(
    body: &'a [u8],
    pair: &PairKey,
    now: DateTime<Utc>,
    activities: &mut ActivityCache<'a>,
) -> Option<(Pager, Vec<Entry>)> {
    let envelope: FastEnvelope<'a> = serde_json::from_slice(body).ok()?;
    let entries = envelope
        .items
        .into_iter()
        .map(|wire| {
            let (visit, activity) = check(wire, pair, now, activities).ok()?;
            Some(Entry::Visit { visit, activity })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((envelope.pager, entries))
}

/// A page item by item: valid items become visits, the others rejects.
fn decode_each<'a>(
    body: &'a [u8],
    pair: &PairKey,
    now: DateTime<Utc>,
    activities: &mut ActivityCache<'a>,
) -> Result<(Pager, Vec<Entry>), ApiError> {
    let envelope: Envelope<'a> = serde_json::from_slice(body).map_err(|e| ApiError::Decode {
        reason: e.to_string(),
        snippet: snippet(body),
    })?;
    let entries = envelope
        .items
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            decode_item(raw, pair, now, activities).map_err(|reason| ApiError::Decode {
                reason: format!("item {i}: {reason}"),
                snippet: snippet(raw.get().as_bytes()),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((envelope.pager, entries))
}

/// One item: a visit, or a reject kept whole. An item that is not even a JSON value we can
/// hold (nested past serde_json's depth limit) fails the page instead.
fn decode_item<'a>(
    raw: &'a RawValue,
    pair: &PairKey,
    now: DateTime<Utc>,
    activities: &mut ActivityCache<'a>,
) -> Result<Entry, String> {
    let reason = match validate(raw, pair, now, activities) {
        Ok((visit, activity)) => return Ok(Entry::Visit { visit, activity }),
        Err(reason) => reason,
    };
    // Only a rejected item is parsed into a tree, to keep it whole.
    let raw: Value = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
    Ok(Entry::Rejected {
        visit_at: raw
            .get("visitAt")
            .and_then(Value::as_str)
            .and_then(|s| time(s).ok()),
        activity_id: raw
            .get("activityId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        last_online_at: raw
            .get("lastOnlineAt")
            .and_then(Value::as_str)
            .and_then(|s| time(s).ok()),
        reject: Reject { raw, reason },
    })
}

fn validate<'a>(
    raw: &'a RawValue,
    pair: &PairKey,
    now: DateTime<Utc>,
    activities: &mut ActivityCache<'a>,
) -> Result<(Visit, Option<Arc<Activity>>), String> {
    let json = raw.get();
    // Fast without path tracking; a failure is decoded again with it, so the reason names
    // the field (`duration: invalid type …`).
    let wire: WireVisit<'_> = match serde_json::from_str(json) {
        Ok(wire) => wire,
        Err(_) => typed(json, "")?,
    };
    check(wire, pair, now, activities)
}

/// The rules of an item beyond its shape: times readable, the requested user, a possible
/// visit ([`Visit::new`]), an activity matching its id.
fn check<'a>(
    wire: WireVisit<'a>,
    pair: &PairKey,
    now: DateTime<Utc>,
    activities: &mut ActivityCache<'a>,
) -> Result<(Visit, Option<Arc<Activity>>), String> {
    let visit_at = time(&wire.visit_at).map_err(|e| format!("visitAt: {e}"))?;
    let last_online_at = time(&wire.last_online_at).map_err(|e| format!("lastOnlineAt: {e}"))?;
    if wire.activity_id.contains('\0') || holds_nul(&wire.extra) {
        // Only the usual page's single pass meets one: the page is then repaired.
        return Err("the item holds a NUL".to_owned());
    }
    if wire.user_id != pair.user_id {
        return Err(format!(
            "userId {} differs from the requested user {}",
            wire.user_id, pair.user_id
        ));
    }
    let parts = VisitParts {
        agent_id: pair.agent_id,
        user_id: wire.user_id,
        activity_id: wire.activity_id.into_owned(),
        visit_at,
        last_online_at,
        duration_minutes: wire.duration,
        extra: wire.extra,
    };
    let visit = Visit::new(parts, now).map_err(|e| e.to_string())?;
    let activity = match wire.activity {
        None => None,
        Some(raw) => {
            let a = activities.get(raw)?;
            if a.id != visit.activity_id() {
                return Err(format!(
                    "activity.id {} differs from activityId {}",
                    a.id,
                    visit.activity_id()
                ));
            }
            Some(a)
        }
    };
    Ok((visit, activity))
}

fn activity(a: WireActivity, extra: Map<String, Value>) -> Result<Activity, String> {
    let opt = |field: &str, v: Option<String>| -> Result<Option<DateTime<Utc>>, String> {
        v.map(|s| time(&s).map_err(|e| format!("activity.{field}: {e}")))
            .transpose()
    };
    Ok(Activity {
        started_at: opt("startedAt", a.started_at)?,
        ended_at: opt("endedAt", a.ended_at)?,
        created_at: opt("createdAt", a.created_at)?,
        updated_at: match a.updated_at {
            Some(s) => opt("updatedAt", Some(s))?,
            None => opt("updateAt", a.update_at)?,
        },
        id: a.id,
        agent_id: a.agent_id,
        subagent_id: a.subagent_id,
        category_id: a.category_id,
        group_id: a.group_id,
        name: a.name,
        status: a.status,
        is_pushing: a.is_pushing,
        is_archived: a.is_archived,
        push_domain: a.push_domain,
        pull_domain: a.pull_domain,
        extra,
    })
}

/// Whether a key or string anywhere in `map` holds a NUL, which Postgres cannot store.
fn holds_nul(map: &Map<String, Value>) -> bool {
    fn value(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(value),
            Value::Object(m) => holds_nul(m),
            _ => false,
        }
    }
    map.iter().any(|(k, v)| k.contains('\0') || value(v))
}

fn time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e})"))
}

#[cfg(test)]
mod tests;
