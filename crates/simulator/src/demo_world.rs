//! The simulated platforms the demo and `mock-api` serve, each defined once here. Their
//! descriptions (what `mock-api` prints, what the docs list) are generated from these
//! definitions, and tests read their numbers from here instead of repeating them.

use crate::handle::Simulator;

/// A simulated platform: agents, their tokens, and their users' visits.
#[derive(Debug, Clone, Copy)]
pub struct WorldSpec {
    pub seed: u64,
    pub agents: &'static [AgentSpec],
}

/// One simulated agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentSpec {
    pub id: i64,
    pub token: &'static str,
    pub users: &'static [UserSpec],
}

/// One simulated user of an agent.
#[derive(Debug, Clone, Copy)]
pub struct UserSpec {
    pub id: i64,
    /// Closed visits generated at start.
    pub visits: usize,
    /// One more visit after those, whose viewer is still online.
    pub open: bool,
}

impl UserSpec {
    /// Every visit the user has at start, the open one included.
    pub fn total_visits(&self) -> usize {
        self.visits + usize::from(self.open)
    }
}

/// What `szb-sync mock-api` serves: the doc's own agent and users, so the doc's sample
/// requests work against it.
pub const MOCK_API: WorldSpec = WorldSpec {
    seed: 20_200_624,
    agents: &[
        AgentSpec {
            id: 105_131,
            token: "demo-token-105131",
            users: &[
                UserSpec {
                    id: 15_460_259,
                    visits: 1200,
                    open: false,
                },
                UserSpec {
                    id: 15_460_260,
                    visits: 36,
                    open: true,
                },
            ],
        },
        AgentSpec {
            id: 200_001,
            token: "demo-token-200001",
            users: &[UserSpec {
                id: 30_000_001,
                visits: 5,
                open: false,
            }],
        },
    ],
};

/// What `szb-sync demo` syncs: agent ids no real account uses, so the demo never touches real
/// rows in the database it writes to.
pub const DEMO: WorldSpec = WorldSpec {
    seed: 2024,
    agents: &[
        AgentSpec {
            id: 990_001,
            token: "demo-token-990001",
            users: &[
                UserSpec {
                    id: 1_000_001,
                    visits: 1_500,
                    open: false,
                },
                UserSpec {
                    id: 1_000_002,
                    visits: 40,
                    open: true,
                },
            ],
        },
        AgentSpec {
            id: 990_002,
            token: "demo-token-990002",
            users: &[UserSpec {
                id: 2_000_001,
                visits: 7,
                open: false,
            }],
        },
    ],
};

/// The agent of the world `szb-sync mock-api --users N` generates (users 1..=N), and its token.
pub const GENERATED_AGENT: i64 = 105_131;
pub const GENERATED_TOKEN: &str = "mock-token";

/// Visits `szb-sync demo` appends to its first user between its first and second sync.
pub const DEMO_APPENDS: usize = 25;

impl Simulator {
    /// The world `szb-sync mock-api` serves: [`MOCK_API`].
    pub fn demo() -> Self {
        MOCK_API.build()
    }
}

impl WorldSpec {
    /// A simulator holding this world.
    pub fn build(&self) -> Simulator {
        self.build_behind(chrono::Duration::zero())
    }

    /// A simulator holding this world, its clock `behind` the real one: a caller that later
    /// moves the clock forward (`set_clock_skew`) can let time pass upstream without ever
    /// stamping a visit after the real now.
    pub fn build_behind(&self, behind: chrono::Duration) -> Simulator {
        let sim = Simulator::new(self.seed);
        sim.set_clock_skew(-behind);
        for agent in self.agents {
            sim.add_agent(agent.id, agent.token);
            for user in agent.users {
                sim.generate_visits(agent.id, user.id, user.visits);
            }
        }
        // Open visits last, once every agent's closed visits exist.
        for agent in self.agents {
            for user in agent.users.iter().filter(|u| u.open) {
                sim.open_visit(agent.id, user.id);
            }
        }
        sim
    }

    /// Every visit the world holds at start, over all its users.
    pub fn total_visits(&self) -> usize {
        self.agents
            .iter()
            .flat_map(|a| a.users)
            .map(UserSpec::total_visits)
            .sum()
    }

    pub fn agent_ids(&self) -> Vec<i64> {
        self.agents.iter().map(|a| a.id).collect()
    }

    /// One line per agent: its token and its users with their visits.
    pub fn describe(&self) -> Vec<String> {
        self.agents
            .iter()
            .map(|agent| {
                let users: Vec<String> = agent
                    .users
                    .iter()
                    .map(|u| {
                        let open = if u.open { ", one still online" } else { "" };
                        format!("{} ({}{open})", u.id, visits(u.total_visits()))
                    })
                    .collect();
                format!(
                    "agent {} token {}: users {}",
                    agent.id,
                    agent.token,
                    users.join(", ")
                )
            })
            .collect()
    }
}

/// `1 visit`, `2 visits`: this crate's one counted noun.
fn visits(n: usize) -> String {
    match n {
        1 => "1 visit".to_owned(),
        n => format!("{n} visits"),
    }
}
