//! A simulator of the upstream endpoint `GET /api/v3/agent/{id}/user/{userId}/stats/visits`,
//! used by `szb-sync demo`, `szb-sync mock-api` and the tests.
//!
//! A [`Simulator`] is a cheap handle on a shared [`World`]: agents with tokens, their activities,
//! and each user's visits kept in ascending `visitAt` order. The world is deterministic from its
//! seed and can be changed at any time (also from a [`Simulator::set_before_request`] hook, i.e.
//! in the middle of a sync walk) to reproduce what the real platform does: new and late visits,
//! ties on `visitAt`, open visits that grow, retention purges, renamed or deleted activities,
//! hostile items, and transport faults ([`Fault`]). The "truth" accessors ([`Simulator::visits`],
//! [`Simulator::all_visits_ever`], [`Simulator::activity`]) let tests compare the database with
//! what the upstream held.
//!
//! Modules import one way, down this list; none imports one above itself:
//!
//! - [`demo_world`]: the simulated platforms of the demo and `mock-api`, defined once;
//! - `http`: the endpoint itself (one page of the list, faults, hostility), and serving it;
//! - [`arrivals`]: viewers starting to watch on a schedule of their own (Zipf-weighted hot
//!   users and a trickle of cold ones), for the freshness benchmark;
//! - `handle`: [`Simulator`], the shared handle, with each knob of the world;
//! - `knobs`: what tests and the demo change: new visits, ties, purges, faults, limits;
//! - `generate`: how visits and activities are made up, from the seeded generator;
//! - [`world`]: the world's state and its truth types, and reading them.
//!
//! It is a crate of its own beside the daemon's (`szb-sync`), and depends on nothing of it.

pub mod arrivals;
pub mod demo_world;
mod generate;
mod handle;
mod http;
mod knobs;
pub mod world;

#[cfg(test)]
mod tests;

pub use arrivals::{Arrival, ArrivalPlan};
pub use handle::Simulator;
pub use http::SpawnedSimulator;
pub use world::{
    Fault, HOSTILE_STRING_PIECES, Hostile, RequestInfo, TruthActivity, TruthVisit, World,
};
