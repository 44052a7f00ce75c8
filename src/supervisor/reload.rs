//! Reloading: the difference between the running config and a new one, applied so that
//! what did not change keeps running (its connections, its clients) and what did is stopped
//! together and started again.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use super::{finish, RunningSink, Supervisor};
use crate::config::{Config, SinkConfig};
use crate::notify;
use crate::sink;

impl Supervisor {
    /// Applies a new, valid config: unchanged upstreams and sinks keep running.
    pub(super) async fn apply(&mut self, new: Config) {
        let timeout = new.daemon.shutdown_timeout;
        // Sinks. Bind the new ones whose address nobody holds first: if one fails, the reload
        // is refused before anything changed.
        let wanted: Vec<Arc<SinkConfig>> = new.sinks.iter().cloned().map(Arc::new).collect();
        let is_running =
            |c: &SinkConfig, sinks: &[RunningSink]| sinks.iter().any(|s| *s.config == *c);
        let mut fresh = Vec::new();
        for config in wanted.iter().filter(|c| !is_running(c, &self.sinks)) {
            let held = self
                .sinks
                .iter()
                .any(|s| s.config.settings.0.same_place_as(&*config.settings.0));
            if held {
                continue;
            }
            match sink::bind(config) {
                Ok(bound) => fresh.push((config.clone(), bound)),
                Err(e) => {
                    error!(sink = %config.name(), "reload refused, the running config stays: {e}");
                    return;
                }
            }
        }
        let (keep, stop): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sinks)
            .into_iter()
            .partition(|s| wanted.iter().any(|c| **c == *s.config));
        self.sinks = keep;
        // logrotate's "move, then reload": a file sink kept as it is writes to a new file.
        for sink in &self.sinks {
            sink.reopen.notify_one();
        }
        // Stop them all, then wait for them together: one slow client does not hold up the
        // others' ends.
        let mut stopping = Vec::new();
        let mut stopped = Vec::new();
        for sink in stop {
            info!(sink = %sink.config.name(), "stopping sink (removed or changed)");
            sink.cancel.cancel();
            stopping.push((format!("sink {}", sink.config.name()), sink.task));
            stopped.push(sink.config);
        }
        finish_reloading(stopping, Instant::now() + timeout).await;
        for (config, bound) in fresh {
            info!(sink = %config.name(), "starting sink");
            self.spawn_sink(config, bound);
        }
        // Sinks that replace a stopped one on the same address or path.
        let replacing: Vec<_> = wanted
            .iter()
            .filter(|c| !is_running(c, &self.sinks))
            .cloned()
            .collect();
        for config in &replacing {
            match sink::bind(config) {
                Ok(bound) => {
                    info!(sink = %config.name(), "restarting sink with its new settings");
                    self.spawn_sink(config.clone(), bound);
                }
                Err(e) => {
                    error!(sink = %config.name(), "cannot start the changed sink: {e}; restoring its previous settings");
                    if let Some(old) = stopped
                        .iter()
                        .find(|o| o.settings.0.same_place_as(&*config.settings.0))
                    {
                        match sink::bind(old) {
                            Ok(bound) => self.spawn_sink(old.clone(), bound),
                            Err(e) => {
                                error!(sink = %old.name(), "cannot restore the sink either: {e}")
                            }
                        }
                    }
                }
            }
        }
        self.route_sinks();

        // Upstreams, by name. Every changed or removed one is sent its Close at once, and
        // then they are waited for together (each within the same deadline); a changed one
        // reconnects once its old connection is closed.
        let mut old = std::mem::take(&mut self.upstreams);
        let mut closing = Vec::new();
        let mut changed = Vec::new();
        for config in &new.upstreams {
            match old.remove(&config.name) {
                Some(running) if *running.config == *config => {
                    self.upstreams.insert(config.name.clone(), running);
                }
                Some(running) => {
                    info!(upstream = %config.name, "settings changed; reconnecting");
                    running.cancel.cancel();
                    closing.push((format!("upstream {}", config.name), running.task));
                    changed.push(Arc::new(config.clone()));
                }
                None if self.runs(&config.name) => {
                    info!(upstream = %config.name, "new upstream");
                    self.spawn_upstream(Arc::new(config.clone()));
                }
                // Another instance holds its lease.
                None => {}
            }
        }
        for (name, running) in old {
            info!(upstream = %name, "removed; closing");
            running.cancel.cancel();
            closing.push((format!("upstream {name}"), running.task));
            self.upstream_stats.remove(&name);
        }
        finish_reloading(closing, Instant::now() + timeout).await;
        for config in changed {
            self.spawn_upstream(config);
        }
        if let Some(cluster) = &self.cluster {
            cluster.set_upstreams(&new.upstreams);
        }
        self.publish_directory();
        self.config
            .restart_warnings(&new)
            .iter()
            .for_each(|w| warn!("{w}"));
        self.config = new;
        self.publish_metrics();
        info!("{}", self.summary());
    }
}

/// [`finish`] for every task, all at once, during a reload, petting systemd's watchdog while
/// it waits: a reload waiting (within `shutdown_timeout`) for slow peers to close is busy,
/// not hung. Not for shutdown, which comes after STOPPING=1, when systemd's stop timeout is
/// what applies.
pub(super) async fn finish_reloading<T>(tasks: Vec<(String, JoinHandle<T>)>, deadline: Instant) {
    if tasks.is_empty() {
        return;
    }
    let finishing = futures_util::future::join_all(
        tasks
            .into_iter()
            .map(|(what, task)| async move { finish(task, deadline, &what).await }),
    );
    let Some(period) = notify::watchdog_interval() else {
        return drop(finishing.await);
    };
    let mut pet = tokio::time::interval(period);
    tokio::pin!(finishing);
    loop {
        tokio::select! {
            _ = &mut finishing => return,
            _ = pet.tick() => notify::watchdog(),
        }
    }
}
