//! What keeps the daemon going between passes: the schedule (and, later, systemd's watchdog and
//! pair leases).

pub mod scheduler;
