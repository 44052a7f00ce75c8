//! The hub: which sinks receive which upstream's events, and which upstream a sink client's
//! inbound line goes to.
//!
//! The supervisor owns the [`Hub`] and rewrites its routes on reload. Each upstream task holds
//! an [`Outlet`]: a cached list of its sinks' bounded inputs, refreshed only when the
//! routes change (a version check, no lock on the hot path). Sinks hold a [`Directory`]
//! receiver to find the send queue of the upstream a line is for. Data flows one way:
//! events from upstreams to sinks, inbound messages from sink clients straight into the
//! upstream's own queue, never back through the hub.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::config::SinkConfig;
use crate::record::Event;

/// Events of one upstream that arrived together (read without waiting), shared by every sink:
/// one allocation and one channel send per sink per batch, not per message.
pub type Batch = Arc<Vec<Event>>;

/// A sink's bounded input, in batches.
pub type SinkInput = mpsc::Sender<Batch>;

/// An upstream's bounded queue of messages to send.
pub type SendQueue = mpsc::Sender<Message>;

/// The send queues of every running upstream, by name.
pub type Directory = HashMap<String, SendQueue>;

/// Delivers one upstream's events to the sinks routed to it.
#[derive(Debug)]
pub struct Outlet {
    routes: watch::Receiver<Arc<Vec<SinkInput>>>,
    current: Arc<Vec<SinkInput>>,
}

impl Outlet {
    /// An outlet with a fixed list of sinks (for `connect`, which has no reload).
    pub fn fixed(sinks: Vec<SinkInput>) -> Outlet {
        let (tx, rx) = watch::channel(Arc::new(sinks));
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Outlet::new(rx)
    }

    fn new(mut routes: watch::Receiver<Arc<Vec<SinkInput>>>) -> Outlet {
        let current = routes.borrow_and_update().clone();
        Outlet { routes, current }
    }

    /// Sends one event to every routed sink.
    pub async fn deliver(&mut self, event: Event) {
        self.deliver_batch(vec![event]).await;
    }

    /// Sends `events` to every routed sink, waiting where a sink's input is full (that is the
    /// backpressure of `on_slow = "block"`; other sinks drain their input promptly).
    pub async fn deliver_batch(&mut self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if self.routes.has_changed().unwrap_or(false) {
            self.current = self.routes.borrow_and_update().clone();
        }
        let batch = Arc::new(events);
        for sink in self.current.iter() {
            // A sink that stopped (removed on reload) just no longer receives.
            let _ = sink.send(batch.clone()).await;
        }
    }
}

/// The routing table, owned by the supervisor.
#[derive(Debug)]
pub struct Hub {
    outlets: HashMap<String, watch::Sender<Arc<Vec<SinkInput>>>>,
    sinks: Vec<(Arc<SinkConfig>, SinkInput)>,
    directory: watch::Sender<Arc<Directory>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            outlets: HashMap::new(),
            sinks: Vec::new(),
            directory: watch::channel(Arc::new(Directory::new())).0,
        }
    }
}

impl Hub {
    /// An outlet for `upstream`, already routed to the current sinks.
    pub fn outlet(&mut self, upstream: &str) -> Outlet {
        let sinks = self.sinks_for(upstream);
        let sender = self
            .outlets
            .entry(upstream.to_string())
            .or_insert_with(|| watch::channel(Arc::new(Vec::new())).0);
        sender.send_replace(Arc::new(sinks));
        Outlet::new(sender.subscribe())
    }

    /// A receiver of the upstream directory, for a sink.
    pub fn directory(&self) -> watch::Receiver<Arc<Directory>> {
        self.directory.subscribe()
    }

    /// Replaces the set of sinks and re-routes every upstream.
    pub fn set_sinks(&mut self, sinks: Vec<(Arc<SinkConfig>, SinkInput)>) {
        self.sinks = sinks;
        for (name, sender) in &self.outlets {
            let routed: Vec<_> = self
                .sinks
                .iter()
                .filter(|(config, _)| config.routes(name))
                .map(|(_, input)| input.clone())
                .collect();
            sender.send_replace(Arc::new(routed));
        }
    }

    /// Replaces the directory of upstream send queues; forgets outlets of removed upstreams.
    pub fn set_upstreams(&mut self, queues: Directory) {
        self.outlets.retain(|name, _| queues.contains_key(name));
        self.directory.send_replace(Arc::new(queues));
    }

    /// Drops every route, so sinks see their input close once the upstream tasks are gone.
    pub fn clear(&mut self) {
        self.set_sinks(Vec::new());
        self.outlets.clear();
        self.directory.send_replace(Arc::new(Directory::new()));
    }

    fn sinks_for(&self, upstream: &str) -> Vec<SinkInput> {
        self.sinks
            .iter()
            .filter(|(config, _)| config.routes(upstream))
            .map(|(_, input)| input.clone())
            .collect()
    }
}
