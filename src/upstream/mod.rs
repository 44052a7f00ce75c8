//! One task per upstream endpoint: connect, send `on_connect` and queued messages, read
//! frames into events, keep the connection alive, and reconnect with backoff.
//!
//! The task owns its socket and its send queue; the supervisor only starts it, cancels it
//! and reads its [`UpstreamStats`]. `connect` runs the same task in [`RunMode::Once`].
//!
//! - `reconnect`: the task's loop of attempts, sessions and backoff.
//! - `session`: one open connection; `frames` its reading side, `outgoing` its writing side.
//! - [`stats`]: state, counters and causes; [`keepalive`], [`app_ping`], [`backoff`]: the
//!   timing rules; `linger`: when `connect`'s Close goes after stdin EOF; `inflate`: `decompress`;
//!   [`reply`]: answers to the server's own pings; [`checks`]: `sequence` and `event_time`,
//!   whose lags [`lag`] keeps as a histogram.
//! - [`mod@connect`]: the handshake, on the stream `dial` opens: directly or through a
//!   [`proxy`], then [`tls`] for `wss://`, read through `read_ahead` (reads that grow while
//!   messages stream and shrink back when idle); [`before_connect`]: the program that prepares each
//!   attempt; [`refused`]: the wait after a refused handshake.

pub mod app_ping;
pub use crate::backoff;
mod arena;
pub mod before_connect;
pub mod checks;
pub mod connect;
mod dial;
mod frames;
mod inflate;
pub mod keepalive;
pub mod lag;
mod linger;
mod outgoing;
pub mod proxy;
mod read_ahead;
mod reconnect;
pub mod refused;
pub mod reply;
mod session;
mod socket;
pub mod stats;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::config::UpstreamConfig;
use crate::hub::Outlet;

pub use stats::{describe, Cause, SessionEnd, State, UpstreamExit, UpstreamStats};

/// Whether the task reconnects forever (the daemon, `connect --reconnect`) or ends with the
/// first connection (plain `connect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Reconnect after every failure and Close, with backoff.
    Reconnect,
    /// Return after the first connection ends or the first attempt fails.
    Once,
}

/// Everything one upstream task needs.
pub struct Upstream {
    /// What to connect to and how.
    pub config: Arc<UpstreamConfig>,
    /// Shared counters.
    pub stats: Arc<UpstreamStats>,
    /// Where events go.
    pub outlet: Outlet,
    /// Messages to send (from sink clients or stdin), bounded by `send_queue`.
    pub queue: mpsc::Receiver<Message>,
    /// Cancelled to stop: Close with `goodbye` is sent and the task returns.
    pub shutdown: CancellationToken,
    /// The Close code sent when cancelled: 1001 for the daemon, 1000 for `connect`.
    pub goodbye: CloseCode,
    /// Reconnect forever, or once.
    pub mode: RunMode,
    /// How long to wait for the peer's Close after ours.
    pub close_timeout: Duration,
    /// Data messages still to deliver; then the task closes with 1000 and ends, as after
    /// being cancelled (`connect --max-messages`). Counted down across reconnects. `None`:
    /// no limit.
    pub max_messages: Option<u64>,
    /// When a Close comes through the send queue (`connect` at stdin EOF), keep reading until
    /// the peer is done (see `linger`), then send it: the peer answered a Ping sent behind our
    /// last message and then went quiet, or it has sent nothing for this long. Servers such as
    /// Python `websockets` answer a Close at once and drop the replies they had not sent yet.
    /// Zero: send it at once.
    pub linger: Duration,
}
