//! `type = "stdout"`: no keys of its own; one per process (it claims stdout).

use serde::Deserialize;

use crate::config::sink::{Buffer, Inbound, Shared, SinkSettings, SinkType};
use crate::config::{SinkCheck, SinkConfig};
use crate::sink::registry::SinkComponent;
use crate::sink::{BoundSink, SinkError};

/// The stdout sink type.
pub struct Stdout;

/// Its own keys: none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutKeys {}

/// Its settings: none, beyond being the one stdout.
#[derive(Debug, Clone, PartialEq)]
pub struct StdoutSettings;

impl SinkSettings for StdoutSettings {
    fn name(&self) -> String {
        "stdout".into()
    }

    fn same_place_as(&self, other: &dyn SinkSettings) -> bool {
        other.as_any().is::<StdoutSettings>()
    }
}

impl SinkType for Stdout {
    const NAME: &'static str = "stdout";
    // One reader, the pipe: it is always backpressure.
    const SHARED: Shared = Shared {
        buffer: Buffer::Records,
        buffer_bytes: false,
        on_slow: None,
        max_block: false,
        listener: false,
        inbound: Inbound::Never,
    };
    type Keys = StdoutKeys;
    type Settings = StdoutSettings;

    fn validate(_: StdoutKeys, check: &mut SinkCheck<'_, '_>) -> Option<StdoutSettings> {
        let span = check.type_span();
        check.claim("stdout".into(), "stdout".into(), span);
        Some(StdoutSettings)
    }
}

impl SinkComponent for Stdout {
    fn bind(_: &SinkConfig, _: &StdoutSettings) -> Result<BoundSink, SinkError> {
        Ok(BoundSink::new(|ctx| async move {
            super::StdoutSink::with_encoder(super::process_stdout()?, ctx.encoder())
                .run(ctx.input, ctx.shutdown, ctx.stats)
                .await
        }))
    }
}
