//! The lease task's way to NATS: the client connection (credentials taken out of the URL),
//! and the KV bucket, opened or created as the stream it is.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};
use async_nats::{Client, ConnectOptions};
use tracing::{info, warn};

use super::{Leases, Unreachable};
use crate::config::cluster::ClusterConfig;

/// Connects in the background: it retries forever, quickly, because every second without
/// NATS brings this instance's upstreams closer to their deadlines.
pub(super) async fn connect(
    config: &ClusterConfig,
    tick: Duration,
) -> Result<Client, async_nats::ConnectError> {
    let mut options = ConnectOptions::new()
        .name("wsbridge-cluster")
        .connection_timeout(config.lease_ttl)
        .request_timeout(Some(config.lease_ttl / 4))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(move |n| (tick * n.min(4) as u32).min(Duration::from_secs(1)));
    let url = &config.nats;
    if !url.username().is_empty() {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        options =
            options.user_and_password(decode(url.username()), decode(url.password().unwrap_or("")));
    }
    let mut plain = url.clone();
    let _ = plain.set_username("");
    let _ = plain.set_password(None);
    options.connect(plain.as_str()).await
}

impl Leases {
    /// The lease bucket, opened (or created) on first use and kept.
    pub(super) async fn store(&mut self) -> Result<kv::Store, Unreachable> {
        if let Some(store) = &self.store {
            return Ok(store.clone());
        }
        let js = jetstream::new(self.client.clone());
        let bucket = self.ch.config.bucket.clone();
        let store = match self
            .op("open the bucket", js.get_key_value(bucket.clone()))
            .await?
        {
            Ok(store) => store,
            Err(_) => {
                // The stream a KV bucket is, written out: async-nats' create_key_value first
                // reads the account's limits in a form servers before 2.10 do not answer.
                let max_age = self.ttl * 3;
                let config = jetstream::stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some("wsbridge leases: which instance runs which upstream".into()),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    // A key nobody renewed is gone after this, whatever became of its holder.
                    max_age,
                    duplicate_window: max_age.min(Duration::from_secs(120)),
                    storage: StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    discard: jetstream::stream::DiscardPolicy::New,
                    num_replicas: self.ch.config.bucket_replicas,
                    ..Default::default()
                };
                if let Err(e) = self
                    .op("create the bucket", js.get_or_create_stream(config))
                    .await?
                {
                    warn!(bucket = %bucket, "cannot create the lease bucket: {e}; is JetStream enabled on the server (nats-server -js)?");
                    return Err(Unreachable);
                }
                match self
                    .op("open the bucket", js.get_key_value(bucket.clone()))
                    .await?
                {
                    Ok(store) => store,
                    Err(e) => {
                        warn!(bucket = %bucket, "cannot open the lease bucket: {e}");
                        return Err(Unreachable);
                    }
                }
            }
        };
        info!(bucket = %bucket, "lease bucket ready");
        self.store = Some(store.clone());
        Ok(store)
    }
}
