//! The `wsbridge run` config a test writes, built from the sections the tests share.

/// A `wsbridge run` config, built from the sections most tests share: `[daemon]`'s
/// shutdown timeout, `[metrics]` on a loopback port, upstreams and sinks, each given as its
/// name or type plus the test's own keys as TOML lines. Written out (by `Display`) in the
/// order the file format reads best: daemon, metrics, other tables, upstreams, sinks.
#[derive(Clone, Debug, Default)]
pub struct TestConfig {
    /// `[daemon] shutdown_timeout`, if the test wants a short one.
    shutdown_timeout: Option<String>,
    /// The `[metrics]` listen port on 127.0.0.1.
    metrics: Option<u16>,
    /// Other tables (`[defaults]`, `[cluster]` …), verbatim.
    tables: String,
    /// `[[upstream]]` entries.
    upstreams: String,
    /// `[[sink]]` entries.
    sinks: String,
}

impl TestConfig {
    /// An empty config.
    pub fn new() -> TestConfig {
        TestConfig::default()
    }

    /// The shape most upstream-side tests run: one upstream named `feed` at `url` with
    /// `keys`, into a `stdout` sink.
    pub fn feed_to_stdout(url: &str, keys: &str) -> TestConfig {
        TestConfig::new().upstream("feed", url, keys).stdout_sink()
    }

    /// `[daemon] shutdown_timeout = "…"` (tests keep it short so that they end quickly).
    pub fn shutdown_timeout(mut self, timeout: &str) -> TestConfig {
        self.shutdown_timeout = Some(timeout.to_string());
        self
    }

    /// `[metrics] listen = "127.0.0.1:PORT"`.
    pub fn metrics(mut self, port: u16) -> TestConfig {
        self.metrics = Some(port);
        self
    }

    /// Another table, verbatim (`"[defaults]\nsequence = \".u\""`).
    pub fn table(mut self, toml: &str) -> TestConfig {
        self.tables.push_str(&format!("\n{}\n", toml.trim()));
        self
    }

    /// An `[[upstream]]` named `name` at `url`, with `keys` (TOML lines, maybe empty).
    pub fn upstream(mut self, name: &str, url: &str, keys: &str) -> TestConfig {
        self.upstreams.push_str(&format!(
            "\n[[upstream]]\nname = \"{name}\"\nurl = \"{url}\"\n{}",
            lines(keys)
        ));
        self
    }

    /// A `[[sink]]` of type `kind` with `keys` (TOML lines, maybe empty).
    pub fn sink(mut self, kind: &str, keys: &str) -> TestConfig {
        self.sinks
            .push_str(&format!("\n[[sink]]\ntype = \"{kind}\"\n{}", lines(keys)));
        self
    }

    /// A `stdout` sink with its defaults: what [`Daemon::next_record`] reads.
    pub fn stdout_sink(self) -> TestConfig {
        self.sink("stdout", "")
    }
}

/// `keys` as TOML lines, each ending in a newline.
fn lines(keys: &str) -> String {
    let keys = keys.trim();
    if keys.is_empty() {
        String::new()
    } else {
        format!("{keys}\n")
    }
}

impl std::fmt::Display for TestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(timeout) = &self.shutdown_timeout {
            writeln!(f, "[daemon]\nshutdown_timeout = \"{timeout}\"\n")?;
        }
        if let Some(port) = self.metrics {
            writeln!(f, "[metrics]\nlisten = \"127.0.0.1:{port}\"\n")?;
        }
        write!(f, "{}{}{}", self.tables, self.upstreams, self.sinks)
    }
}
