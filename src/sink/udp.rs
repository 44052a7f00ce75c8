//! The udp sink: one datagram per record to an address or a multicast group, for the tools
//! that listen for market data on UDP.
//!
//! A datagram is the record's line without its trailing newline: UDP keeps the boundaries,
//! and listeners parse one JSON object per datagram (a `filter` that makes several lines of
//! one record sends them together, newline-separated). The socket is opened and connected
//! when the sink is bound, so a bad interface stops the daemon at start.
//!
//! Delivery is the shared [`Driver`] and [`run_single`]; [`UdpWriter`] counts each record
//! itself, since a round can end part written: a record larger than a datagram holds is
//! dropped (`too_large`), never split; a send that fails (an ICMP "port unreachable" seen as
//! `ECONNREFUSED` on the next send, no route) drops that record (`io`) and the sink goes on,
//! as UDP does.

pub mod settings;

pub use settings::UdpSettings;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::driver::run_single;
use super::writer::SinkWriter;
use super::{DropReason, Encoded, SinkContext, SinkError, SinkStats};

/// The largest UDP payload over IPv4: 65,535 less the IPv4 (20) and UDP (8) headers.
pub const MAX_DATAGRAM_V4: usize = 65_507;
/// The largest UDP payload over IPv6 without jumbograms: 65,535 less the UDP header.
pub const MAX_DATAGRAM_V6: usize = 65_527;

/// Opens a socket of the target's family, sets the multicast options and connects it to the
/// target (so the kernel reports a closed port, and each send names no address).
pub fn open(udp: &UdpSettings) -> io::Result<UdpSocket> {
    let local: SocketAddr = match udp.target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = StdUdpSocket::bind(local)?;
    if let Some(ttl) = udp.ttl {
        match udp.target {
            SocketAddr::V4(_) => socket.set_multicast_ttl_v4(ttl)?,
            SocketAddr::V6(_) => rustix::net::sockopt::set_ipv6_multicast_hops(&socket, ttl)?,
        }
    }
    if let Some(interface) = udp.interface {
        rustix::net::sockopt::set_ip_multicast_if(&socket, &interface)?;
    }
    socket.connect(udp.target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Runs a udp sink until its input closes or it is cancelled.
pub async fn run(socket: UdpSocket, udp: UdpSettings, ctx: SinkContext) -> Result<(), SinkError> {
    let driver = ctx.driver(ctx.config.on_slow);
    let writer = UdpWriter::new(socket, udp.target, ctx.stats.clone());
    run_single(ctx.input, ctx.shutdown, driver, writer)
        .await
        .map_err(SinkError::Delivery)
}

/// Sends each record of a round as a datagram, counting what was sent and what was not.
pub struct UdpWriter {
    socket: UdpSocket,
    target: SocketAddr,
    /// The largest payload of the target's family.
    max: usize,
    stats: Arc<SinkStats>,
}

/// What became of one round's records, counted once at its end.
#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    too_large: u64,
    /// Records whose send failed, with the last error.
    failed: u64,
    last_error: Option<io::Error>,
}

impl UdpWriter {
    /// A writer sending on `socket`, connected to `target`.
    pub fn new(socket: UdpSocket, target: SocketAddr, stats: Arc<SinkStats>) -> UdpWriter {
        let max = match target {
            SocketAddr::V4(_) => MAX_DATAGRAM_V4,
            SocketAddr::V6(_) => MAX_DATAGRAM_V6,
        };
        UdpWriter {
            socket,
            target,
            max,
            stats,
        }
    }

    async fn send(&self, datagram: &[u8], tally: &mut Tally) {
        if datagram.len() > self.max {
            tally.too_large += 1;
            return;
        }
        match self.socket.send(datagram).await {
            Ok(_) => tally.sent += 1,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MSGSIZE.raw_os_error()) => {
                tally.too_large += 1
            }
            Err(e) => {
                tally.failed += 1;
                tally.last_error = Some(e);
            }
        }
    }

    fn count(&self, tally: Tally) {
        self.stats
            .records_written
            .fetch_add(tally.sent, Ordering::Relaxed);
        if tally.too_large > 0 {
            let why = format!(
                "a record is larger than a datagram to {} holds ({} bytes); it is never split",
                self.target, self.max
            );
            self.stats
                .drop_records(DropReason::TooLarge, tally.too_large, &why);
        }
        if let Some(e) = tally.last_error {
            let why = format!("sending to {} failed: {e}", self.target);
            self.stats.drop_records(DropReason::Io, tally.failed, &why);
        }
    }
}

impl SinkWriter for UdpWriter {
    /// A round can end part sent: each record is counted here, not by the queue.
    fn counts_itself(&self) -> bool {
        true
    }

    /// Never fails: a record that cannot be sent is counted and the next one tried. The
    /// counts are added at the end, so a write cut short (the sink aborted) leaves its whole
    /// round to the queue's own count.
    async fn write(&mut self, round: &[Encoded]) -> io::Result<()> {
        let mut tally = Tally::default();
        for run in round {
            for record in run.records() {
                let datagram = record.line.strip_suffix(b"\n").unwrap_or(record.line);
                self.send(datagram, &mut tally).await;
            }
        }
        self.count(tally);
        Ok(())
    }
}
