//! The reconnect loop of one upstream task: prepare the attempt (`before_connect`), connect,
//! run a session, record how it ended, wait out the backoff (or what a refusing server
//! asked for) and go again, until cancelled, given up, or (in [`RunMode::Once`])
//! the first connection ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::backoff::Backoff;
use super::connect::{self, ConnectError};
use super::stats::{describe, Cause, SessionEnd, State, UpstreamExit};
use super::tls;
use super::{before_connect, refused};
use super::{RunMode, Upstream};
use crate::config::UpstreamConfig;
use crate::record::{Event, EventKind};

impl Upstream {
    /// Runs until cancelled, given up, or (in [`RunMode::Once`]) the connection ends.
    pub async fn run(mut self) -> UpstreamExit {
        let name: Arc<str> = Arc::from(self.config.name.as_str());
        let url = self.config.display_url();
        // Built now for a wss:// URL, so an unreadable ca_file stops the upstream at once;
        // else on the first attempt that `before_connect` sends to a wss:// URL.
        let mut tls = if self.config.url.scheme() == "wss" {
            match tls::client_config(&self.config) {
                Ok(c) => Some(c),
                Err(e) => return self.fail_setup(&name, e.into()).await,
            }
        } else {
            None
        };
        let mut backoff = Backoff::new(self.config.reconnect.clone());
        loop {
            self.stats.set_state(State::Connecting);
            debug!(%url, "connecting");
            let attempt = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                attempt = self.attempt(&mut tls) => attempt,
            };
            let end = match attempt {
                Err(error) => {
                    let (cause, status, wait) = match &error {
                        ConnectError::Rejected {
                            code, retry_after, ..
                        } => (
                            Cause::HandshakeRefused,
                            Some(*code),
                            refused::delay(*code, *retry_after, self.config.reconnect.max),
                        ),
                        ConnectError::BeforeConnect(_) => (Cause::BeforeConnectFailed, None, None),
                        _ => (Cause::ConnectFailed, None, None),
                    };
                    self.stats.count_disconnect(cause);
                    if self.mode == RunMode::Once {
                        self.stats.set_state(State::Stopped);
                        return UpstreamExit::ConnectFailed(error);
                    }
                    let message = match &error {
                        ConnectError::BeforeConnect(e) => e.to_string(),
                        other => format!("cannot connect to {url}: {other}"),
                    };
                    // The failure still counts against max_attempts and grows the backoff;
                    // a refusal only decides how long this one wait is.
                    match self.schedule_retry(&mut backoff) {
                        Some(delay) => {
                            let delay = wait.unwrap_or(delay);
                            warn!(retry_in = %crate::duration::human(delay), "{message}");
                            self.emit_error(&name, message, status, Some(delay)).await;
                            if !self.sleep(delay).await {
                                break;
                            }
                            continue;
                        }
                        None => return self.give_up(&name, &backoff, message).await,
                    }
                }
                Ok((connected, attempt)) => {
                    // The URL of this attempt: `before_connect` may have given another one.
                    let url = attempt.display_url();
                    self.stats.connects.fetch_add(1, Ordering::Relaxed);
                    self.stats.set_state(State::Open);
                    info!(%url, protocol = connected.protocol.as_deref().unwrap_or(""), "connected");
                    self.outlet
                        .deliver(
                            &name,
                            Event::now(EventKind::Open {
                                url,
                                protocol: connected.protocol,
                            }),
                        )
                        .await;
                    backoff.opened();
                    let end = self.session(connected.ws, &name, &attempt.on_connect).await;
                    backoff.closed();
                    self.stats.count_disconnect(end.cause());
                    end
                }
            };
            if let SessionEnd::Closed { code, reason } = &end {
                // A Close we sent, still worth a record so readers see the end.
                let kind = EventKind::Close {
                    code: *code,
                    reason: reason.clone(),
                    retry_in_ms: None,
                };
                self.outlet.deliver(&name, Event::now(kind)).await;
                break;
            }
            if self.mode == RunMode::Once {
                self.emit_end(&name, &end, None).await;
                self.stats.set_state(State::Stopped);
                return UpstreamExit::Ended(end);
            }
            // on_gap = "reconnect" subscribes again at once; a gap again before the connection
            // was stable waits out the backoff, so a feed that always gaps is not a storm.
            let at_once = end.cause() == Cause::SequenceGap && backoff.failures() == 0;
            let delay = match self.schedule_retry(&mut backoff) {
                Some(_) if at_once => Duration::ZERO,
                Some(delay) => delay,
                None => {
                    self.emit_end(&name, &end, None).await;
                    return self.give_up(&name, &backoff, describe(&end)).await;
                }
            };
            match &end {
                SessionEnd::PeerClosed { code, reason } => {
                    info!(code, reason = %reason, retry_in = %crate::duration::human(delay), "peer closed the connection")
                }
                other => {
                    warn!(retry_in = %crate::duration::human(delay), "connection to {url} lost: {}", describe(other))
                }
            }
            self.emit_end(&name, &end, Some(delay)).await;
            if !self.sleep(delay).await {
                break;
            }
        }
        self.stats.set_state(State::Stopped);
        UpstreamExit::Shutdown
    }

    /// One attempt: the `before_connect` program (when configured) gives this attempt its
    /// settings, then the handshake. Returns the connection and the settings it used.
    ///
    /// TLS follows the URL this attempt dials, which `before_connect` may have switched
    /// between `ws://` and `wss://`. `tls` keeps the upstream's TLS settings once built: an
    /// attempt changes only the URL, headers, cookies and on_connect, never those.
    async fn attempt(
        &self,
        tls: &mut Option<Arc<rustls::ClientConfig>>,
    ) -> Result<(connect::Connected, Arc<UpstreamConfig>), ConnectError> {
        let config = match &self.config.before_connect {
            None => self.config.clone(),
            Some(argv) => {
                debug!(program = %argv.first().map_or("", String::as_str), "running before_connect");
                Arc::new(before_connect::prepare(&self.config, argv).await?)
            }
        };
        let dial_tls = if config.url.scheme() == "wss" {
            let built = match tls {
                Some(built) => built.clone(),
                None => tls.insert(tls::client_config(&config)?).clone(),
            };
            Some(built)
        } else {
            None
        };
        let connected = connect::open(&config, dial_tls).await?;
        Ok((connected, config))
    }

    fn schedule_retry(&self, backoff: &mut Backoff) -> Option<Duration> {
        let delay = backoff.next_delay()?;
        self.stats.set_state(State::Backoff);
        Some(delay)
    }

    async fn emit_error(
        &mut self,
        name: &Arc<str>,
        error: String,
        status: Option<u16>,
        retry: Option<Duration>,
    ) {
        let retry_in_ms = retry.map(|d| d.as_millis() as u64);
        let kind = EventKind::Error {
            error,
            status,
            retry_in_ms,
        };
        self.outlet.deliver(name, Event::now(kind)).await;
    }

    /// The record for a connection that ended: `close` for a peer Close, else `error`.
    async fn emit_end(&mut self, name: &Arc<str>, end: &SessionEnd, retry: Option<Duration>) {
        let retry_in_ms = retry.map(|d| d.as_millis() as u64);
        let kind = match end {
            SessionEnd::PeerClosed { code, reason } => EventKind::Close {
                code: *code,
                reason: reason.clone(),
                retry_in_ms,
            },
            other => EventKind::Error {
                error: describe(other),
                status: None,
                retry_in_ms,
            },
        };
        self.outlet.deliver(name, Event::now(kind)).await;
    }

    async fn give_up(&mut self, name: &Arc<str>, backoff: &Backoff, last: String) -> UpstreamExit {
        let message = format!(
            "giving up after {} failed attempts in a row (reconnect.max_attempts); last error: {last}; fix the upstream and reload (SIGHUP) to try again",
            backoff.failures()
        );
        tracing::error!("{message}");
        self.emit_error(name, message, None, None).await;
        self.stats.set_state(State::Stopped);
        UpstreamExit::GaveUp
    }

    async fn fail_setup(&mut self, name: &Arc<str>, error: ConnectError) -> UpstreamExit {
        tracing::error!("{error}");
        self.stats.set_state(State::Stopped);
        if self.mode == RunMode::Once {
            return UpstreamExit::ConnectFailed(error);
        }
        self.emit_error(name, error.to_string(), None, None).await;
        UpstreamExit::GaveUp
    }

    /// Waits `delay`; false if cancelled meanwhile.
    async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
