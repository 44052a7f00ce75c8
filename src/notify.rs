//! systemd's notify protocol (`Type=notify`, sd_notify(3)): READY, RELOADING, STOPPING,
//! STATUS and the watchdog. Every call is a no-op when `NOTIFY_SOCKET` is unset.
//!
//! The `sd-notify` crate formats the fields and reads the monotonic clock; sending and the
//! watchdog settings are done here, following libsystemd rather than sd-notify 0.4, which
//! - cannot reach an abstract socket (`NOTIFY_SOCKET=@name`), which sd_notify(3) allows, and
//! - turns the watchdog off when `WATCHDOG_PID` is unset, where sd_watchdog_enabled(3) says
//!   the watchdog is then meant for us (`WATCHDOG_PID` only says *which* process it is for).
//!
//! Each call sends one datagram, so fields that belong together (RELOADING=1 and
//! MONOTONIC_USEC, READY=1 and STATUS) arrive together.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

/// How long one notification may wait for room in the manager's socket. Blocking forever
/// would stall the supervisor (and with it the watchdog); giving up at once would lose a
/// READY=1 to a moment's congestion.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest watchdog period we act on: `WATCHDOG_USEC=1` must not become a busy loop
/// (or a zero-length interval, which tokio refuses).
const MIN_WATCHDOG_PERIOD: Duration = Duration::from_millis(1);

fn send(states: &[NotifyState<'_>]) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()) else {
        return;
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = send_to(&target, message.as_bytes()) {
        tracing::warn!(
            socket = %target.to_string_lossy(),
            error = %e,
            "cannot notify systemd"
        );
    }
}

/// Sends one datagram to `NOTIFY_SOCKET`'s value: a path, or `@name` for Linux's abstract
/// namespace.
fn send_to(target: &OsStr, message: &[u8]) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    connect(&socket, target)?;
    let sent = socket.send(message)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn connect(socket: &UnixDatagram, target: &OsStr) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;
    match target.as_bytes().strip_prefix(b"@") {
        Some(name) => socket.connect_addr(&SocketAddr::from_abstract_name(name)?),
        None => socket.connect(target),
    }
}

#[cfg(not(target_os = "linux"))]
fn connect(socket: &UnixDatagram, target: &OsStr) -> io::Result<()> {
    socket.connect(target)
}

/// Every sink listens and every upstream task is started (at startup and after a reload).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (SIGHUP). systemd (v253+) wants the CLOCK_MONOTONIC time of the request
/// in the same message, to tell this reload from an earlier one.
pub fn reloading() {
    let status = NotifyState::Status("reloading the config");
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, status]),
        Err(e) => {
            // Not seen in practice: clock_gettime(CLOCK_MONOTONIC) does not fail on Linux.
            tracing::warn!(error = %e, "cannot read the monotonic clock for RELOADING=1");
            send(&[NotifyState::Reloading, status]);
        }
    }
}

/// Shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// A one-line summary for `systemctl status`.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// The watchdog is alive.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to pet the watchdog (half its timeout), if systemd enabled it for us: like
/// sd_watchdog_enabled(3), `WATCHDOG_USEC` turns it on and `WATCHDOG_PID`, when set, must
/// be our pid.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_period(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] on given values, for tests.
fn watchdog_period(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some((Duration::from_micros(usec) / 2).max(MIN_WATCHDOG_PERIOD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_follows_sd_watchdog_enabled() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_period(Some("200000"), None, 7), half);
        assert_eq!(watchdog_period(Some("200000"), Some("7"), 7), half);
        assert_eq!(watchdog_period(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("200000"), Some("x"), 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(
            watchdog_period(Some("1"), None, 7),
            Some(MIN_WATCHDOG_PERIOD)
        );
    }

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), b"READY=1\nSTATUS=ok\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = format!("wsbridge-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send_to(OsStr::new(&format!("@{name}")), b"WATCHDOG=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = send_to(dir.path().join("nobody").as_os_str(), b"READY=1\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
