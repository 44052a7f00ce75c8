//! The tcp sink's listener: bound here, or passed by systemd.

pub mod settings;

use std::net::SocketAddr;

use super::SinkError;

/// Binds `addr` (non-blocking, inside the runtime).
pub fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, SinkError> {
    let bind = || -> std::io::Result<tokio::net::TcpListener> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    };
    bind().map_err(|source| SinkError::Bind { addr, source })
}

/// Uses a listener systemd passed for `addr`.
pub fn adopt(
    listener: std::net::TcpListener,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, SinkError> {
    let adopt = || -> std::io::Result<tokio::net::TcpListener> {
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    };
    adopt().map_err(|source| SinkError::Bind { addr, source })
}
