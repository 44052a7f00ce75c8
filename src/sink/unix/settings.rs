//! `type = "unix"`: its keys (`path`, `mode`), their validation, its `check` lines and its
//! binding (or the socket systemd passed).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;
use tracing::info;

use crate::config::sink::{Buffer, Inbound, Shared, SinkSettings, SinkType, SlowRule};
use crate::config::{socket_file_identity, OnSlow, SinkCheck, SinkConfig};
use crate::sink::registry::SinkComponent;
use crate::sink::{activation, listener, BoundSink, SinkError};

/// The unix sink type.
pub struct Unix;

/// The longest unix socket path: `sun_path` holds 108 bytes, one of them the closing NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The shared keys of a listener sink (unix, tcp).
pub(in crate::sink) const LISTENER: Shared = Shared {
    buffer: Buffer::Records,
    buffer_bytes: true,
    on_slow: Some(SlowRule {
        default: OnSlow::Disconnect,
        no_disconnect: None,
    }),
    max_block: true,
    listener: true,
    inbound: Inbound::On,
};

/// Its own keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixKeys {
    pub path: Option<Spanned<PathBuf>>,
    pub mode: Option<Spanned<String>>,
}

/// A Unix stream socket listener.
#[derive(Debug, Clone, PartialEq)]
pub struct UnixSettings {
    /// The socket file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl SinkSettings for UnixSettings {
    fn name(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    fn plan(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  mode           {:04o}", self.mode)?;
        writeln!(f, "  max_clients    {}", sink.listener.max_clients)
    }

    fn plan_queue(&self, sink: &SinkConfig, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::sink::tcp::settings::plan_clients(sink, f)
    }

    fn same_place_as(&self, other: &dyn SinkSettings) -> bool {
        other
            .as_any()
            .downcast_ref::<UnixSettings>()
            .is_some_and(|o| o.path == self.path)
    }
}

impl SinkType for Unix {
    const NAME: &'static str = "unix";
    const SHARED: Shared = LISTENER;
    type Keys = UnixKeys;
    type Settings = UnixSettings;

    fn validate(s: UnixKeys, check: &mut SinkCheck<'_, '_>) -> Option<UnixSettings> {
        let mode = match &s.mode {
            Some(m) => match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
                Ok(mode) if mode <= 0o777 => Some(mode),
                _ => {
                    check.error(
                        Some(m.span()),
                        Some(check.key("mode")),
                        format!(
                            "{:?} is not an octal file mode; write it like \"0660\"",
                            m.get_ref()
                        ),
                    );
                    None
                }
            },
            None => Some(0o660),
        };
        if let Some(p) = &s.path {
            let length = p.get_ref().as_os_str().len();
            if length > MAX_SOCKET_PATH {
                check.error(
                    Some(p.span()),
                    Some(check.key("path")),
                    format!("is {length} bytes long; a unix socket path holds at most {MAX_SOCKET_PATH} (sun_path), so use a shorter one such as /run/wsbridge/NAME.sock"),
                );
            }
        }
        match &s.path {
            Some(p) if !p.get_ref().as_os_str().is_empty() => {
                let path = p.get_ref();
                check.claim(
                    format!("socket path {}", socket_file_identity(path).display()),
                    format!("socket path {}", path.display()),
                    p.span(),
                );
                Some(UnixSettings {
                    path: path.clone(),
                    mode: mode?,
                })
            }
            _ => {
                check.error(
                    Some(check.type_span()),
                    Some(check.key("path")),
                    "a unix sink needs `path`, the socket file to create".into(),
                );
                None
            }
        }
    }
}

impl SinkComponent for Unix {
    fn bind(config: &SinkConfig, unix: &UnixSettings) -> Result<BoundSink, SinkError> {
        let fd_name = config.listener.fd_name.as_deref();
        let path = &unix.path;
        let binding = match activation::unix(path, fd_name) {
            Ok(Some(passed)) => {
                info!(sink = %config.name(), "using the socket systemd passed");
                super::adopt(passed, path)
            }
            Ok(None) => super::bind(path, unix.mode),
            Err(reason) => Err(SinkError::Activation {
                sink: config.name(),
                reason,
            }),
        }?;
        Ok(BoundSink::new(move |ctx| async move {
            let max_clients = ctx.config.listener.max_clients;
            let listener = listener::Listener::Unix(&binding.listener);
            let result = listener::run(listener, max_clients, ctx).await;
            drop(binding); // removes the socket file
            result
        }))
    }
}
