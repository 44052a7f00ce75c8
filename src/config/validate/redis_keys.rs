//! One writer per Redis key: `{instance}` in a redis sink's `stream` (the `[cluster]`
//! instance's name), and the refusal of configs where two writers could add to one stream
//! key (two redis sinks whose keys meet on one server and database, or an upstream with
//! `replicas > 1` into a key that does not name the instance). A redis sink's entry IDs
//! are only safe from a single writer: another one's entries make its records refused.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use url::Url;

use super::Validator;
use crate::config::broker::{render, INSTANCE_PLACEHOLDER};
use crate::config::cluster::ClusterConfig;
use crate::config::{SinkConfig, SinkKind, UpstreamConfig};

/// A redis sink as validation found it: its key (`sink[3]`), where its `stream` is (or its
/// `type`, when `stream` is not written), and its index among the validated sinks.
pub(super) struct RedisSink {
    pub key: String,
    pub span: Range<usize>,
    pub index: usize,
}

impl Validator<'_> {
    /// Renders `{instance}` and refuses two writers on one key.
    pub(super) fn redis_keys(
        &mut self,
        redis: &[RedisSink],
        sinks: &mut [SinkConfig],
        upstreams: &[UpstreamConfig],
        names: &HashSet<String>,
        cluster: Option<&ClusterConfig>,
    ) {
        // A nats subject may name the instance too (its identity keeps the template).
        for config in sinks.iter_mut() {
            if let SinkKind::Nats(nats) = &mut config.kind {
                if nats.subject.contains(INSTANCE_PLACEHOLDER) {
                    match cluster {
                        Some(c) => {
                            nats.subject = nats.subject.replace(INSTANCE_PLACEHOLDER, &c.instance)
                        }
                        None => self.error(
                            None,
                            Some("sink.subject".into()),
                            format!("{INSTANCE_PLACEHOLDER} is the name of this instance in [cluster]; without [cluster] remove it"),
                        ),
                    }
                }
            }
        }
        // Each (server, key) and the first sink that writes it.
        let mut writers: BTreeMap<(String, String), String> = BTreeMap::new();
        for sink in redis {
            let Some(config) = sinks.get_mut(sink.index) else {
                continue;
            };
            let routed: Vec<&str> = match &config.upstreams {
                Some(list) => list.iter().map(String::as_str).collect(),
                None => names.iter().map(String::as_str).collect(),
            };
            let SinkKind::Redis(redis) = &mut config.kind else {
                continue;
            };
            let skey = format!("{}.stream", sink.key);
            let per_instance = redis.stream.contains(INSTANCE_PLACEHOLDER);
            if per_instance {
                match cluster {
                    Some(c) => {
                        redis.stream = redis.stream.replace(INSTANCE_PLACEHOLDER, &c.instance)
                    }
                    None => {
                        self.error(Some(sink.span.clone()), Some(skey.clone()), format!("{INSTANCE_PLACEHOLDER} is the name of this instance in [cluster]; without [cluster] remove it"));
                        continue;
                    }
                }
            }
            for u in upstreams
                .iter()
                .filter(|u| u.replicas > 1 && routed.contains(&u.name.as_str()))
            {
                if !per_instance {
                    self.error(
                        Some(sink.span.clone()),
                        Some(skey.clone()),
                        format!("upstream {:?} runs on {} instances at once (replicas), and each would add its records to the same stream key; put {INSTANCE_PLACEHOLDER} in the key (such as \"wsbridge:{{instance}}:{{upstream}}\") or set replicas = 1", u.name, u.replicas),
                    );
                    break;
                }
            }
            let server = server_identity(&redis.url);
            let mut rendered: Vec<String> =
                routed.iter().map(|u| render(&redis.stream, u)).collect();
            rendered.sort();
            rendered.dedup();
            for stream in rendered {
                match writers.get(&(server.clone(), stream.clone())) {
                    Some(first) if *first != sink.key => {
                        self.error(
                            Some(sink.span.clone()),
                            Some(skey.clone()),
                            format!("stream key {stream:?} on {server} is already written by {first}; a key takes one writer (its entry IDs would refuse each other's records): give each sink its own key"),
                        );
                        break;
                    }
                    _ => {
                        writers.insert((server.clone(), stream), sink.key.clone());
                    }
                }
            }
        }
    }
}

/// The server and database a redis URL names, however it is spelt: `host:port/db`.
fn server_identity(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let port = url.port().unwrap_or(6379);
    let db: u64 = url.path().trim_matches('/').parse().unwrap_or(0);
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_its_host_port_and_database() {
        let id = |u: &str| server_identity(&Url::parse(u).unwrap());
        assert_eq!(id("redis://LocalHost"), "localhost:6379/0");
        assert_eq!(id("redis://:pw@h:6379/0"), id("redis://h/"));
        assert_ne!(id("redis://h/1"), id("redis://h/0"));
    }
}
