//! What the config layer knows of sink types: the traits a type implements and the catalog
//! it is found in, never the types themselves (they are modules of `sink`, whose registry
//! the callers pass to [`super::Config::load`]).
//!
//! A type is a [`SinkType`]: its name, the shared keys it takes ([`Shared`]), its own keys
//! (a serde struct denying unknown keys), and the validation that turns them into its
//! [`SinkSettings`]. The keys every type shares (`upstreams`, `format`, `buffer`, …) are read
//! and validated here, once; a type declares which of the optional ones it takes.

use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::de::{DeserializeOwned, Visitor};

use super::validate::SinkCheck;
use super::{OnSlow, SinkConfig};

/// A sink type's validated settings: what only that type has.
pub trait SinkSettings: fmt::Debug + Send + Sync + AsAny {
    /// A short name for logs: `stdout`, `unix:/run/x.sock`, `tcp:127.0.0.1:7001`.
    fn name(&self) -> String;

    /// Its own lines in `check`'s plan, just below `sink NAME`.
    fn plan(&self, _sink: &SinkConfig, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }

    /// Its queue line in the plan, after `format` (the queue keys mean different things per
    /// type: records per client, bytes while a broker is down).
    fn plan_queue(&self, _sink: &SinkConfig, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }

    /// Whether `other` holds the same place (stdout, an address, a path): on reload a new
    /// sink is bound only where no running sink holds its place.
    fn same_place_as(&self, _other: &dyn SinkSettings) -> bool {
        false
    }
}

/// Lets the supervisor compare settings and a sink module get its own type back.
pub trait AsAny {
    /// `self` as [`Any`], to downcast.
    fn as_any(&self) -> &dyn Any;
    /// Whether `other` is of the same type and equal.
    fn eq_any(&self, other: &dyn Any) -> bool;
}

impl<T: Any + PartialEq> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn eq_any(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>().is_some_and(|o| o == self)
    }
}

/// A sink's settings, shared and compared by value (a reload keeps an equal sink running).
#[derive(Debug, Clone)]
pub struct Settings(pub Arc<dyn SinkSettings>);

impl PartialEq for Settings {
    fn eq(&self, other: &Settings) -> bool {
        self.0.eq_any(other.0.as_any())
    }
}

impl Settings {
    /// The settings as the type that made them.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
}

/// A sink type, implemented by its module in `sink`.
pub trait SinkType: 'static {
    /// `type = "…"`.
    const NAME: &'static str;
    /// The shared keys it takes, and what they mean for it.
    const SHARED: Shared;
    /// Its own keys: a serde struct with `deny_unknown_fields`, every key optional (a missing
    /// one is reported by [`SinkType::validate`] with what to write).
    type Keys: DeserializeOwned + Send + 'static;
    /// What it runs on.
    type Settings: SinkSettings + PartialEq;
    /// Checks its keys, reporting every problem to `check`; `None` if there was one.
    fn validate(keys: Self::Keys, check: &mut SinkCheck<'_, '_>) -> Option<Self::Settings>;
}

/// Which shared keys a type takes beyond `type`, `upstreams`, `format`, `events`,
/// `parse_json`, `filter`, `inbound` and `buffer` (every type takes those).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    /// What `buffer` counts.
    pub buffer: Buffer,
    /// `buffer_bytes`.
    pub buffer_bytes: bool,
    /// `on_slow`; `None`: not taken, the sink always waits (one reader: a pipe, a disk).
    pub on_slow: Option<SlowRule>,
    /// `max_block`.
    pub max_block: bool,
    /// `max_clients`, `replay` and `fd_name`: a listener's keys.
    pub listener: bool,
    /// What `inbound` means.
    pub inbound: Inbound,
}

/// What a type's `buffer` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    /// Records per destination, with `buffer_bytes` bounding their bytes.
    Records,
    /// Bytes ("64MiB"): records to a broker vary from a few bytes to megabytes.
    Bytes,
}

/// How a type takes `on_slow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowRule {
    /// When the key is absent.
    pub default: OnSlow,
    /// `Some(why)`: `"disconnect"` is refused with this message (no clients to disconnect).
    pub no_disconnect: Option<&'static str>,
}

/// What `inbound` means for a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// It has no clients to read lines from: `inbound = true` is refused.
    Never,
    /// Off unless asked for (a program's stdout: a legacy tool's chatter is logged instead).
    Off,
    /// On unless turned off (listener clients).
    On,
}

/// Whether a type's [`Shared`] takes a key.
type Takes = fn(&Shared) -> bool;

/// The shared keys taken by some types only, with the [`Shared`] field that lets a type take
/// them: a key the type does not take is refused with "a X sink has no `key` key".
pub(super) const OPTIONAL_KEYS: [(&str, Takes); 6] = [
    ("buffer_bytes", |s| s.buffer_bytes),
    ("on_slow", |s| s.on_slow.is_some()),
    ("max_block", |s| s.max_block),
    ("max_clients", |s| s.listener),
    ("replay", |s| s.listener),
    ("fd_name", |s| s.listener),
];

/// The shared keys every type takes.
pub(super) const COMMON_KEYS: [&str; 7] = [
    "upstreams",
    "format",
    "events",
    "parse_json",
    "filter",
    "inbound",
    "buffer",
];

/// A place a sink holds (an address, a file), so that two sinks on one are refused before
/// anything is bound.
#[derive(Debug, Clone)]
pub struct Claim {
    /// What identifies it (two spellings of one path are one resource).
    pub resource: String,
    /// How it is shown in the error.
    pub shown: String,
    /// Where the config names it.
    pub span: Range<usize>,
    /// `Some((key, why))`: a place that takes one writer whatever it is otherwise (a Redis
    /// stream key); a second is reported under `key` with `why` and what to do.
    pub one_writer: Option<(String, &'static str)>,
}

/// Reads a type's own keys from its table.
type ReadKeys = fn(
    &mut super::parse::Parsed,
    &toml::Spanned<toml::de::DeValue<'_>>,
    &str,
) -> Option<Box<dyn Any + Send>>;

/// Validates a type's own keys into its settings.
type ValidateKeys =
    fn(Box<dyn Any + Send>, &mut SinkCheck<'_, '_>) -> Option<Arc<dyn SinkSettings>>;

/// One sink type as the config layer reads it: made by [`SinkEntry::of`].
pub struct SinkEntry {
    /// `type = "…"`.
    pub name: &'static str,
    /// The shared keys it takes.
    pub shared: Shared,
    /// Its own keys.
    pub(super) fields: fn() -> &'static [&'static str],
    /// Reads its own keys from a table (see `parse.rs`).
    pub(super) read: ReadKeys,
    /// Validates what `read` returned.
    pub(super) validate: ValidateKeys,
}

impl SinkEntry {
    /// The entry of type `T`.
    pub const fn of<T: SinkType>() -> SinkEntry {
        SinkEntry {
            name: T::NAME,
            shared: T::SHARED,
            fields: struct_fields::<T::Keys>,
            read: read_keys::<T>,
            validate: validate_keys::<T>,
        }
    }

    /// Every key a table of this type may hold.
    pub(super) fn keys(&self) -> Vec<&'static str> {
        let mut keys = vec!["type"];
        keys.extend(COMMON_KEYS);
        keys.extend(
            OPTIONAL_KEYS
                .iter()
                .filter(|(_, takes)| takes(&self.shared))
                .map(|(k, _)| *k),
        );
        keys.extend((self.fields)());
        keys
    }
}

/// [`SinkEntry::read`] of `T`.
fn read_keys<T: SinkType>(
    parsed: &mut super::parse::Parsed,
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    key: &str,
) -> Option<Box<dyn Any + Send>> {
    parsed
        .table::<T::Keys>(value, key)
        .map(|keys| Box::new(keys) as Box<dyn Any + Send>)
}

/// [`SinkEntry::validate`] of `T`.
fn validate_keys<T: SinkType>(
    keys: Box<dyn Any + Send>,
    check: &mut SinkCheck<'_, '_>,
) -> Option<Arc<dyn SinkSettings>> {
    let keys = keys.downcast::<T::Keys>().ok()?;
    T::validate(*keys, check).map(|s| Arc::new(s) as Arc<dyn SinkSettings>)
}

/// The sink types a config may use: the sink layer's registry.
pub trait SinkCatalog: Sync {
    /// Every type, in the order errors list them.
    fn entries(&self) -> Vec<&SinkEntry>;

    /// The type named `name`.
    fn get(&self, name: &str) -> Option<&SinkEntry> {
        self.entries().into_iter().find(|e| e.name == name)
    }
}

/// The field names of a serde struct, asked of its `Deserialize` impl: the keys a type takes
/// are written once, in its struct.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// A deserializer that only records the fields of the struct asked of it.
struct Probe<'a>(&'a mut &'static [&'static str]);

/// [`Probe`]'s error: it never yields a value.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Stop {}

impl serde::de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> serde::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = fields;
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}
