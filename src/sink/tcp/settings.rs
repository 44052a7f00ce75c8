//! `type = "tcp"`: its keys (`listen`, `allow_remote`), their validation, its `check` lines
//! and its binding (or the socket systemd passed).

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;
use tracing::info;

use crate::config::plan::{on_slow, size};
use crate::config::sink::{Shared, SinkSettings, SinkType};
use crate::config::{SinkCheck, SinkConfig};
use crate::sink::registry::SinkComponent;
use crate::sink::unix::settings::LISTENER;
use crate::sink::{activation, listener, BoundSink, SinkError};

/// The tcp sink type.
pub struct Tcp;

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeys {
    pub listen: Option<Spanned<String>>,
    pub allow_remote: Option<Spanned<bool>>,
}

/// A TCP listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpSettings {
    /// The listen address.
    pub listen: SocketAddr,
}

/// The queue line of a listener sink in `check`'s plan.
pub(in crate::sink) fn plan_clients(s: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "  clients        buffer {} records or {}, on_slow {}, inbound {}",
        s.buffer,
        size(s.buffer_bytes),
        on_slow(s.on_slow),
        if s.inbound { "on" } else { "off" }
    )
}

impl SinkSettings for TcpSettings {
    fn name(&self) -> String {
        format!("tcp:{}", self.listen)
    }

    fn plan(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  max_clients    {}", sink.listener.max_clients)
    }

    fn plan_queue(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        plan_clients(sink, f)
    }

    fn same_place_as(&self, other: &dyn SinkSettings) -> bool {
        other
            .as_any()
            .downcast_ref::<TcpSettings>()
            .is_some_and(|o| o.listen == self.listen)
    }
}

impl SinkType for Tcp {
    const NAME: &'static str = "tcp";
    const SHARED: Shared = LISTENER;
    type Keys = TcpKeys;
    type Settings = TcpSettings;

    fn validate(s: TcpKeys, check: &mut SinkCheck<'_, '_>) -> Option<TcpSettings> {
        let listen = match &s.listen {
            Some(l) => check.socket_addr(l, &check.key("listen")),
            None => {
                check.error(
                    Some(check.type_span()),
                    Some(check.key("listen")),
                    "a tcp sink needs `listen`, such as \"127.0.0.1:7001\"".into(),
                );
                None
            }
        };
        if let (Some(addr), Some(l)) = (listen, &s.listen) {
            let allowed = s.allow_remote.as_ref().is_some_and(|a| *a.get_ref());
            if !addr.ip().is_loopback() && !allowed {
                check.error(Some(l.span()), Some(check.key("listen")), format!("{addr} is not a loopback address: anyone who can reach it could read the feed and write upstream; set allow_remote = true if that is intended"));
            }
            // Port 0 asks the system for a free port: no two get the same one.
            if addr.port() != 0 {
                check.claim(
                    format!("address {addr}"),
                    format!("address {addr}"),
                    l.span(),
                );
            }
        }
        Some(TcpSettings { listen: listen? })
    }
}

impl SinkComponent for Tcp {
    fn bind(config: &SinkConfig, tcp: &TcpSettings) -> Result<BoundSink, SinkError> {
        let fd_name = config.listener.fd_name.as_deref();
        let listen = tcp.listen;
        let tcp = match activation::tcp(listen, fd_name) {
            Ok(Some(passed)) => {
                info!(sink = %config.name(), "using the socket systemd passed");
                super::adopt(passed, listen)
            }
            Ok(None) => super::bind(listen),
            Err(reason) => Err(SinkError::Activation {
                sink: config.name(),
                reason,
            }),
        }?;
        Ok(BoundSink::new(move |ctx| async move {
            let max_clients = ctx.config.listener.max_clients;
            listener::run(listener::Listener::Tcp(&tcp), max_clients, ctx).await
        }))
    }
}
