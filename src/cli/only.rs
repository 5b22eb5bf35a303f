//! `sync --only AGENT:USER[,…]`: the entries, and the configured pairs they pick.

use std::collections::HashSet;
use std::str::FromStr;

use crate::domain::Pair;
use crate::plural::noun;

/// One `AGENT:USER` entry of `--only`. It picks every configured pair of that agent and user
/// (one per activity filter when targets filter by activity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairSelector {
    pub agent_id: i64,
    pub user_id: i64,
}

impl FromStr for PairSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected AGENT:USER, two ids such as 105131:15460259";
        let (agent, user) = s.split_once(':').ok_or_else(|| expected.to_owned())?;
        let id = |what: &str, v: &str| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("{what} {v:?} is not an id; {expected}"))
        };
        Ok(PairSelector {
            agent_id: id("agent", agent)?,
            user_id: id("user", user)?,
        })
    }
}

impl std::fmt::Display for PairSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.agent_id, self.user_id)
    }
}

/// The configured pairs that `only` picks, in configuration order; every pair when `only` is
/// empty. Fails before anything syncs, naming each entry that picks no configured pair.
pub(super) fn select(pairs: &[Pair], only: &[PairSelector]) -> anyhow::Result<Vec<Pair>> {
    if only.is_empty() {
        return Ok(pairs.to_vec());
    }
    let configured: HashSet<_> = pairs
        .iter()
        .map(|p| (p.key.agent_id, p.key.user_id))
        .collect();
    let unknown: Vec<String> = only
        .iter()
        .filter(|s| !configured.contains(&(s.agent_id, s.user_id)))
        .map(PairSelector::to_string)
        .collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "--only {}: not {} of the configuration's targets; nothing was synced",
            unknown.join(", "),
            noun(unknown.len(), "a pair", "pairs")
        );
    }
    let wanted: HashSet<_> = only.iter().map(|s| (s.agent_id, s.user_id)).collect();
    Ok(pairs
        .iter()
        .filter(|p| wanted.contains(&(p.key.agent_id, p.key.user_id)))
        .cloned()
        .collect())
}
