//! Validation of `[cluster]` and of each upstream's `replicas`.

use toml::Spanned;
use url::Url;

use super::Validator;
use crate::config::cluster::{
    ClusterConfig, RawCluster, DEFAULT_BUCKET, DEFAULT_CLUSTER_NATS, DEFAULT_LEASE_TTL,
    MAX_BUCKET_REPLICAS, MIN_LEASE_TTL,
};
use crate::config::expand::expand_env;

/// The most instances one upstream may run on at once.
pub const MAX_REPLICAS: usize = 16;

impl Validator<'_> {
    pub(super) fn cluster(&mut self, c: &RawCluster) -> Option<ClusterConfig> {
        let before = self.errors.len();
        let nats = match &c.nats {
            Some(s) => self.cluster_text(s, "cluster.nats"),
            None => Some(DEFAULT_CLUSTER_NATS.to_string()),
        };
        let nats = nats.and_then(|text| {
            let span = c.nats.as_ref().map(Spanned::span);
            match Url::parse(&text) {
                Ok(url) if matches!(url.scheme(), "nats" | "tls") && url.host_str().is_some() => {
                    Some(url)
                }
                // The text may hold a password: it is not repeated.
                _ => {
                    self.error(
                        span,
                        Some("cluster.nats".into()),
                        format!(
                            "not a nats:// URL with a host; write it like {DEFAULT_CLUSTER_NATS}"
                        ),
                    );
                    None
                }
            }
        });
        let bucket = match &c.bucket {
            Some(s) => self.cluster_text(s, "cluster.bucket").and_then(|b| {
                let ok = !b.is_empty()
                    && b.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
                if !ok {
                    self.error(
                        Some(s.span()),
                        Some("cluster.bucket".into()),
                        format!("{b:?} is not a bucket name; use letters, digits, '_' and '-'"),
                    );
                }
                ok.then_some(b)
            }),
            None => Some(DEFAULT_BUCKET.to_string()),
        };
        let instance = match &c.instance {
            Some(s) => self.cluster_text(s, "cluster.instance").and_then(|i| {
                let ok = !i.is_empty() && i.len() <= 200 && i.chars().all(|c| c.is_ascii_graphic());
                if !ok {
                    self.error(Some(s.span()), Some("cluster.instance".into()), format!("{i:?} is not an instance name; use 1 to 200 printable characters without spaces"));
                }
                ok.then_some(i)
            }),
            None => {
                self.error(
                    None,
                    Some("cluster.instance".into()),
                    "is missing; give every instance its own name, e.g. instance = \"${HOSTNAME}\"".into(),
                );
                None
            }
        };
        let lease_ttl = match &c.lease_ttl {
            Some(s) => self.duration(s, "cluster.lease_ttl").and_then(|d| {
                if d < MIN_LEASE_TTL {
                    self.error(
                        Some(s.span()),
                        Some("cluster.lease_ttl".into()),
                        "must be at least 500ms: leases are renewed at a third of it".into(),
                    );
                    return None;
                }
                Some(d)
            }),
            None => Some(DEFAULT_LEASE_TTL),
        };
        let bucket_replicas = match &c.bucket_replicas {
            Some(n) => self.count(n, "cluster.bucket_replicas", MAX_BUCKET_REPLICAS),
            None => Some(1),
        };
        if self.errors.len() > before {
            return None;
        }
        Some(ClusterConfig {
            nats: nats?,
            bucket: bucket?,
            instance: instance?,
            lease_ttl: lease_ttl?,
            bucket_replicas: bucket_replicas?,
        })
    }

    /// An upstream's `replicas`, 1 when not set.
    pub(super) fn replicas(&mut self, r: Option<&Spanned<i64>>, key: &str) -> Option<usize> {
        match r {
            Some(n) => self.count(n, &format!("{key}.replicas"), MAX_REPLICAS),
            None => Some(1),
        }
    }

    fn cluster_text(&mut self, s: &Spanned<String>, key: &str) -> Option<String> {
        match expand_env(s.get_ref(), self.env) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(Some(s.span()), Some(key.into()), message);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const UP: &str = "[[upstream]]\nname = \"u\"\nurl = \"ws://h/\"\n";

    #[test]
    fn cluster_keys_resolve_with_defaults_and_errors_name_their_key() {
        let text = format!("[cluster]\ninstance = \"${{HOST}}-1\"\n\n{UP}replicas = 2\n");
        let env = |n: &str| (n == "HOST").then(|| "h".to_string());
        let config = Config::parse_with_env(
            &text,
            Path::new("t.toml"),
            &env,
            &crate::sink::registry::SINKS,
        )
        .unwrap();
        let c = config.cluster.unwrap();
        assert_eq!(
            (c.instance.as_str(), c.bucket.as_str()),
            ("h-1", "wsbridge-leases")
        );
        assert_eq!(c.lease_ttl, std::time::Duration::from_secs(5));
        assert_eq!(c.bucket_replicas, 1);
        assert_eq!(config.upstreams[0].replicas, 2);

        let bad =
            format!("[cluster]\nnats = \"http://x/\"\nlease_ttl = \"1ms\"\nbucket_replicas = 6\n\n{UP}replicas = 99\n");
        let errors = Config::parse_with_env(
            &bad,
            Path::new("t.toml"),
            &env,
            &crate::sink::registry::SINKS,
        )
        .unwrap_err()
        .to_string();
        for key in [
            "cluster.nats",
            "cluster.instance",
            "cluster.lease_ttl",
            "cluster.bucket_replicas",
            "upstream[0].replicas",
        ] {
            assert!(errors.contains(key), "{key} in {errors}");
        }
    }
}
