//! Pairs as statements take them: three arrays (agents, users, activity filters) that a
//! statement unnests as `UNNEST($n::int8[], $n+1::int8[], $n+2::text[])`.

use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

use crate::domain::PairKey;

/// The keys of some pairs, as the three arrays a statement unnests, built once.
#[derive(Debug, Default)]
pub(super) struct PairKeys<'a> {
    agents: Vec<i64>,
    users: Vec<i64>,
    /// `''` for a pair without an activity filter, as `sync_state.activity_filter` stores it.
    filters: Vec<&'a str>,
}

impl<'a> FromIterator<&'a PairKey> for PairKeys<'a> {
    fn from_iter<I: IntoIterator<Item = &'a PairKey>>(pairs: I) -> Self {
        let mut keys = PairKeys::default();
        for pair in pairs {
            keys.agents.push(pair.agent_id);
            keys.users.push(pair.user_id);
            keys.filters.push(pair.filter_str());
        }
        keys
    }
}

impl<'a> PairKeys<'a> {
    pub(super) fn of(pairs: &'a [PairKey]) -> Self {
        pairs.iter().collect()
    }

    /// Binds the agents, the users and the filters, in that order, as the next three
    /// parameters of `query`.
    pub(super) fn bind<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.agents)
            .bind(&self.users)
            .bind(&self.filters)
    }
}
