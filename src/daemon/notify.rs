//! systemd's notification protocol (`Type=notify`), through the `sd-notify` crate (pure Rust,
//! no libsystemd): `READY=1` once migrations ran and the schedule is armed, `STATUS=` with the
//! last pass's summary, `WATCHDOG=1` at half of `WATCHDOG_USEC`, `STOPPING=1` on shutdown.
//! Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %crate::error::for_log(&e.to_string()), "could not notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when systemd set one for us.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec) / 2)
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}
