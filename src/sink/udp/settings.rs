//! `type = "udp"`: its keys (`target`, and `ttl`, `interface` for a multicast group), their
//! validation, its `check` lines and its binding (the socket opened and connected).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;
use toml::Spanned;

use crate::config::plan::{on_slow, size};
use crate::config::sink::{Buffer, Inbound, Shared, SinkSettings, SinkType, SlowRule};
use crate::config::{OnSlow, SinkCheck, SinkConfig};
use crate::sink::registry::SinkComponent;
use crate::sink::{BoundSink, SinkError};

/// The udp sink type.
pub struct Udp;

/// `ttl` when not written: the group stays on this host's network segment.
pub const DEFAULT_TTL: u32 = 1;

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpKeys {
    pub target: Option<Spanned<String>>,
    pub ttl: Option<Spanned<i64>>,
    pub interface: Option<Spanned<String>>,
}

/// Datagrams to one address, unicast or a multicast group.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpSettings {
    /// Where every datagram goes.
    pub target: SocketAddr,
    /// Hops a multicast datagram may take (`IP_MULTICAST_TTL`); `None` for unicast.
    pub ttl: Option<u32>,
    /// The IPv4 address of the interface multicast leaves by (`IP_MULTICAST_IF`); `None`:
    /// the one the routing table picks.
    pub interface: Option<Ipv4Addr>,
}

impl SinkSettings for UdpSettings {
    fn name(&self) -> String {
        format!("udp:{}", self.target)
    }

    fn plan(&self, _: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match (self.ttl, self.interface) {
            (None, _) => "unicast".to_string(),
            (Some(ttl), None) => format!("multicast, ttl {ttl}, the routed interface"),
            (Some(ttl), Some(i)) => format!("multicast, ttl {ttl}, interface {i}"),
        };
        writeln!(
            f,
            "  target         {} ({how}; a datagram per record, no newline)",
            self.target
        )
    }

    fn plan_queue(&self, s: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  queue          {} records or {}, on_slow {}",
            s.buffer,
            size(s.buffer_bytes),
            on_slow(s.on_slow)
        )
    }
}

impl SinkType for Udp {
    const NAME: &'static str = "udp";
    // UDP listeners want fresh data, and a datagram is fire-and-forget: a socket that cannot
    // keep up drops (counted) rather than holding the upstream, unless "block" is asked for.
    const SHARED: Shared = Shared {
        buffer: Buffer::Records,
        buffer_bytes: true,
        on_slow: Some(SlowRule {
            default: OnSlow::Drop,
            no_disconnect: Some("a udp sink sends to one address, it has no clients to disconnect: use \"drop\" (the default) or \"block\""),
        }),
        max_block: true,
        listener: false,
        inbound: Inbound::Never,
    };
    type Keys = UdpKeys;
    type Settings = UdpSettings;

    /// Its `target`, and `ttl` and `interface` for a multicast group only.
    fn validate(s: UdpKeys, check: &mut SinkCheck<'_, '_>) -> Option<UdpSettings> {
        let before = check.error_count();
        let target = match &s.target {
            Some(t) => check.socket_addr(t, &check.key("target")),
            None => {
                check.error(
                    Some(check.type_span()),
                    Some(check.key("target")),
                    "a udp sink needs `target`, the address to send to, such as \"127.0.0.1:9000\" or a multicast group \"239.1.2.3:9000\"".into(),
                );
                None
            }
        };
        if let (Some(addr), Some(t)) = (target, &s.target) {
            if addr.port() == 0 || addr.ip().is_unspecified() {
                check.error(
                    Some(t.span()),
                    Some(check.key("target")),
                    format!("{addr} is not an address datagrams can go to: name the listener's address and port"),
                );
            }
        }
        let multicast = target.map(|t| t.ip().is_multicast());
        let ttl = match &s.ttl {
            None => None,
            Some(ttl) if multicast == Some(false) => {
                check.error(
                    Some(ttl.span()),
                    Some(check.key("ttl")),
                    "applies to a multicast group only; the target is unicast (remove `ttl`)"
                        .into(),
                );
                None
            }
            Some(ttl) => match u8::try_from(*ttl.get_ref()) {
                Ok(t) => Some(u32::from(t)),
                Err(_) => {
                    check.error(
                        Some(ttl.span()),
                        Some(check.key("ttl")),
                        "must be from 0 (this host only) to 255".into(),
                    );
                    None
                }
            },
        };
        let interface = match &s.interface {
            None => None,
            Some(i) => {
                let key = check.key("interface");
                match i.get_ref().parse::<Ipv4Addr>() {
                    Err(_) => {
                        check.error(Some(i.span()), Some(key), format!("{:?} is not an IPv4 address; give the address of the interface multicast leaves by, such as \"127.0.0.1\" or \"10.0.0.5\"", i.get_ref()));
                        None
                    }
                    Ok(_) if !target.is_some_and(|t| t.is_ipv4() && t.ip().is_multicast()) => {
                        if target.is_some() {
                            check.error(Some(i.span()), Some(key), "applies to an IPv4 multicast group only; the target is not one (remove `interface`)".into());
                        }
                        None
                    }
                    Ok(addr) => Some(addr),
                }
            }
        };
        if check.error_count() > before {
            return None;
        }
        let target = target?;
        Some(UdpSettings {
            target,
            ttl: match target.ip().is_multicast() {
                true => Some(ttl.unwrap_or(DEFAULT_TTL)),
                false => None,
            },
            interface,
        })
    }
}

impl SinkComponent for Udp {
    fn bind(config: &SinkConfig, udp: &UdpSettings) -> Result<BoundSink, SinkError> {
        let socket = super::open(udp).map_err(|e| {
            SinkError::Delivery(std::io::Error::new(
                e.kind(),
                format!("sink {}: cannot open a UDP socket: {e}", config.name()),
            ))
        })?;
        let udp = udp.clone();
        Ok(BoundSink::new(move |ctx| super::run(socket, udp, ctx)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::sink::registry::SINKS;

    fn sink(keys: &str) -> Result<UdpSettings, Vec<String>> {
        let text = format!(
            "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:9000/x\"\n\n[[sink]]\ntype = \"udp\"\n{keys}\n"
        );
        match Config::parse(&text, Path::new("t.toml"), &SINKS) {
            Ok(config) => Ok(config.sinks[0]
                .settings
                .get::<UdpSettings>()
                .cloned()
                .expect("udp settings")),
            Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
        }
    }

    fn error(keys: &str) -> String {
        sink(keys).expect_err("should be invalid").join("\n")
    }

    #[test]
    fn unicast_needs_only_a_target() {
        let s = sink("target = \"127.0.0.1:9000\"").unwrap();
        assert_eq!(s.target, "127.0.0.1:9000".parse().unwrap());
        assert_eq!((s.ttl, s.interface), (None, None));
        let s = sink("target = \"[::1]:9000\"").unwrap();
        assert!(s.target.is_ipv6());
    }

    #[test]
    fn multicast_takes_ttl_and_interface() {
        let s = sink("target = \"239.1.2.3:9000\"").unwrap();
        assert_eq!(s.ttl, Some(DEFAULT_TTL));
        let s = sink("target = \"239.1.2.3:9000\"\nttl = 0\ninterface = \"127.0.0.1\"").unwrap();
        assert_eq!(s.ttl, Some(0));
        assert_eq!(s.interface, Some(Ipv4Addr::LOCALHOST));
        let s = sink("target = \"[ff02::1]:9000\"\nttl = 4").unwrap();
        assert_eq!(s.ttl, Some(4));
    }

    #[test]
    fn defaults_to_drop_and_refuses_disconnect() {
        let text = "[[upstream]]\nname = \"a\"\nurl = \"ws://127.0.0.1:9000/x\"\n\n[[sink]]\ntype = \"udp\"\ntarget = \"127.0.0.1:9000\"\n";
        let config = Config::parse(text, Path::new("t.toml"), &SINKS).unwrap();
        assert_eq!(config.sinks[0].on_slow, OnSlow::Drop);
        let e = error("target = \"127.0.0.1:9000\"\non_slow = \"disconnect\"");
        assert!(e.contains("no clients to disconnect"), "{e}");
        let e = error("target = \"127.0.0.1:9000\"\nmax_clients = 3");
        assert!(e.contains("max_clients"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_place() {
        let e = error("");
        assert!(
            e.contains("t.toml:6:") && e.contains("sink[0].target"),
            "{e}"
        );
        assert!(error("target = \"localhost\"").contains("sink[0].target"));
        assert!(error("target = \"127.0.0.1:0\"").contains("not an address datagrams"));
        assert!(error("target = \"0.0.0.0:9000\"").contains("not an address datagrams"));
        let e = error("target = \"127.0.0.1:9000\"\nttl = 2");
        assert!(
            e.contains("t.toml:8:7") && e.contains("sink[0].ttl") && e.contains("multicast"),
            "{e}"
        );
        let e = error("target = \"239.1.2.3:9000\"\nttl = 256");
        assert!(e.contains("0 (this host only) to 255"), "{e}");
        let e = error("target = \"239.1.2.3:9000\"\ninterface = \"eth0\"");
        assert!(
            e.contains("sink[0].interface") && e.contains("not an IPv4"),
            "{e}"
        );
        let e = error("target = \"127.0.0.1:9000\"\ninterface = \"127.0.0.1\"");
        assert!(e.contains("IPv4 multicast group only"), "{e}");
        let e = error("target = \"127.0.0.1:9000\"\ngroup = \"x\"");
        assert!(e.contains("group"), "{e}");
    }
}
