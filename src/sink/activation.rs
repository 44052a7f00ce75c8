//! Socket activation (sd_listen_fds(3)): listening sockets that systemd (or
//! `systemd-socket-activate`) passed as fd 3, 4, … with `LISTEN_FDS`, `LISTEN_PID` and
//! `LISTEN_FDNAMES`. A unix or tcp sink whose `path` or `listen` matches one of them, or
//! whose `fd_name` names one, uses it instead of binding its own.
//!
//! The sockets are taken once per process ([`take_from_env`], before any thread or child
//! exists), and the variables are removed so that programs the daemon starts do not take
//! them for their own. The registry keeps each socket; a sink gets a duplicate, so a sink
//! restarted by a reload finds its socket again. Adopting a raw fd needs `unsafe`, which this
//! crate forbids: the `listenfd` crate does it, after checking the fd's type and family.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::OnceLock;

use tracing::warn;

/// One socket systemd passed.
#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A passed socket with its `FileDescriptorName=`.
#[derive(Debug)]
struct Passed {
    fd: usize,
    name: Option<String>,
    socket: Socket,
}

static PASSED: OnceLock<Vec<Passed>> = OnceLock::new();

/// Takes the sockets systemd passed, once; later calls do nothing. Call it before starting
/// threads: it changes the environment.
pub fn take_from_env() {
    PASSED.get_or_init(read_env);
}

fn passed() -> &'static [Passed] {
    PASSED.get_or_init(read_env)
}

fn read_env() -> Vec<Passed> {
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // Checks LISTEN_PID against our pid and removes LISTEN_FDS and LISTEN_PID.
    let mut fds = listenfd::ListenFd::from_env();
    std::env::remove_var("LISTEN_FDNAMES");
    let names: Vec<&str> = names.split(':').collect();
    let mut passed = Vec::new();
    for i in 0..fds.len() {
        let name = names
            .get(i)
            .filter(|n| !n.is_empty())
            .map(|n| n.to_string());
        let socket = match fds.take_tcp_listener(i) {
            Ok(Some(l)) => Socket::Tcp(l),
            _ => match fds.take_unix_listener(i) {
                Ok(Some(l)) => Socket::Unix(l),
                _ => {
                    warn!(
                        fd = i + 3,
                        name, "systemd passed a socket that is not a listening tcp or unix stream socket; it is left unused: use ListenStream= for wsbridge's sinks"
                    );
                    continue;
                }
            },
        };
        passed.push(Passed {
            fd: i + 3,
            name,
            socket,
        });
    }
    passed
}

/// Which passed socket a sink takes, if any: by `fd_name`, else by address.
fn choose<'a>(
    kind: &str,
    wanted: &str,
    fd_name: Option<&str>,
    candidates: Vec<(&'a Passed, bool)>,
) -> Result<Option<&'a Passed>, String> {
    let Some(fd_name) = fd_name else {
        return Ok(candidates
            .into_iter()
            .find(|(_, matches)| *matches)
            .map(|(p, _)| p));
    };
    let named: Vec<_> = candidates
        .into_iter()
        .filter(|(p, _)| p.name.as_deref() == Some(fd_name))
        .collect();
    match named.as_slice() {
        [] => {
            let names: Vec<String> = passed()
                .iter()
                .map(|p| p.name.clone().unwrap_or_else(|| "(unnamed)".into()))
                .collect();
            let names = if names.is_empty() {
                "none: wsbridge was not started by socket activation".to_string()
            } else {
                names.join(", ")
            };
            Err(format!(
                "systemd passed no {kind} socket named {fd_name:?} (passed: {names}); start wsbridge through its .socket unit with FileDescriptorName={fd_name}, or remove fd_name to bind {wanted}"
            ))
        }
        [(one, _)] => Ok(Some(one)),
        several => match several.iter().find(|(_, matches)| *matches) {
            Some((p, _)) => Ok(Some(p)),
            None => Err(format!(
                "systemd passed several {kind} sockets named {fd_name:?} and none is {wanted}; give each sink's socket a FileDescriptorName= of its own"
            )),
        },
    }
}

/// A duplicate of the passed tcp socket for a sink on `listen` (or named `fd_name`); `None`
/// when none is passed for it and the sink binds its own.
pub fn tcp(listen: SocketAddr, fd_name: Option<&str>) -> Result<Option<TcpListener>, String> {
    let candidates = passed()
        .iter()
        .filter_map(|p| match &p.socket {
            Socket::Tcp(l) => Some((p, l.local_addr().is_ok_and(|a| a == listen))),
            Socket::Unix(_) => None,
        })
        .collect();
    let Some(chosen) = choose("tcp", &listen.to_string(), fd_name, candidates)? else {
        return Ok(None);
    };
    let Socket::Tcp(listener) = &chosen.socket else {
        return Ok(None);
    };
    let copy = listener
        .try_clone()
        .map_err(|e| format!("cannot duplicate fd {}: {e}", chosen.fd))?;
    Ok(Some(copy))
}

/// A duplicate of the passed unix socket for a sink on `path` (or named `fd_name`); `None`
/// when none is passed for it and the sink binds its own.
pub fn unix(path: &Path, fd_name: Option<&str>) -> Result<Option<UnixListener>, String> {
    let same = |other: &Path| {
        other == path
            || matches!(
                (std::fs::canonicalize(other), std::fs::canonicalize(path)),
                (Ok(a), Ok(b)) if a == b
            )
    };
    let candidates = passed()
        .iter()
        .filter_map(|p| match &p.socket {
            Socket::Unix(l) => {
                let matches = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(same))
                    .unwrap_or(false);
                Some((p, matches))
            }
            Socket::Tcp(_) => None,
        })
        .collect();
    let wanted = path.display().to_string();
    let Some(chosen) = choose("unix", &wanted, fd_name, candidates)? else {
        return Ok(None);
    };
    let Socket::Unix(listener) = &chosen.socket else {
        return Ok(None);
    };
    let copy = listener
        .try_clone()
        .map_err(|e| format!("cannot duplicate fd {}: {e}", chosen.fd))?;
    Ok(Some(copy))
}
