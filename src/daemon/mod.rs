//! What keeps the daemon going between passes: the schedule, and systemd's notifications.

pub mod notify;
pub mod scheduler;
