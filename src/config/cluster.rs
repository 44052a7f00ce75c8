//! `[cluster]`: several wsbridge instances sharing the upstreams of one config through leases
//! in a NATS JetStream key-value bucket (see [`crate::cluster`]).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use super::redact::redact_url;

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub nats: Option<Spanned<String>>,
    pub bucket: Option<Spanned<String>>,
    pub instance: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<String>>,
    pub bucket_replicas: Option<Spanned<i64>>,
}

/// The NATS server `[cluster]` uses when `nats` is not set.
pub const DEFAULT_CLUSTER_NATS: &str = "nats://127.0.0.1:4222";
/// The bucket when `bucket` is not set.
pub const DEFAULT_BUCKET: &str = "wsbridge-leases";
/// `lease_ttl` when not set.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// The most replicas a JetStream stream (the bucket) may have.
pub const MAX_BUCKET_REPLICAS: usize = 5;
/// The shortest `lease_ttl`: renewals run at a third of it, and each is a round trip.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(500);

/// What `{instance}` in a sink's key (a redis stream, a nats subject) stands for:
/// `[cluster] instance`, replaced when the config is validated.
pub const INSTANCE_PLACEHOLDER: &str = "{instance}";

/// `[cluster]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The NATS server holding the lease bucket (may hold a user and password).
    pub nats: Url,
    /// The JetStream key-value bucket, created when missing.
    pub bucket: String,
    /// This instance's name, unique among the instances sharing the bucket.
    pub instance: String,
    /// An instance that has not renewed a lease for this long has lost it.
    pub lease_ttl: Duration,
    /// Replicas of the bucket's stream in a NATS cluster (1 on a single server).
    pub bucket_replicas: usize,
}

impl ClusterConfig {
    /// The NATS URL without its password, for logs and `check`.
    pub fn display_nats(&self) -> String {
        redact_url(&self.nats)
    }
}
