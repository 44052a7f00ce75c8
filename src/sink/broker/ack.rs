//! A round's acknowledgement as a publisher reports it: a future ([`Ack`]) that resolves to
//! which records of the round the server will never store, per run and reason ([`Settled`]);
//! every other record of the round is stored. Delivery counts the ones written, the others
//! dropped with their reason.

use std::future::Future;
use std::pin::Pin;

use super::BrokerError;
use crate::sink::DropReason;

/// The answer to one round: resolves once the server has stored every record of it, but
/// those that [`Settled`] names as not stored for good.
pub type Ack = Pin<Box<dyn Future<Output = Result<Settled, BrokerError>> + Send>>;

/// What became of a round: the records the server will never store, per run; every other
/// record of the round is stored.
#[derive(Debug, Default)]
pub struct Settled {
    pub(super) refused: Vec<Refusal>,
}

/// Records of one run of a round that were not stored, for one reason.
#[derive(Debug)]
pub(super) struct Refusal {
    /// The run's index in the round.
    pub(super) run: usize,
    pub(super) reason: DropReason,
    pub(super) records: u64,
    /// The first answer that said so, for the log.
    pub(super) why: String,
}

impl Settled {
    /// Every record of the round stored.
    pub fn all_stored() -> Settled {
        Settled::default()
    }

    /// One more record of run `run` (its index in the round) not stored, for `reason`.
    pub fn refused(&mut self, run: usize, reason: DropReason, why: impl FnOnce() -> String) {
        match self
            .refused
            .iter_mut()
            .find(|r| r.run == run && r.reason == reason)
        {
            Some(r) => r.records += 1,
            None => self.refused.push(Refusal {
                run,
                reason,
                records: 1,
                why: why(),
            }),
        }
    }

    /// Records not stored.
    pub fn dropped(&self) -> u64 {
        self.refused.iter().map(|r| r.records).sum()
    }
}

/// The acknowledgement of a publisher whose rounds are stored whole or not at all.
pub fn all_stored(ack: impl Future<Output = Result<(), BrokerError>> + Send + 'static) -> Ack {
    Box::pin(async move { ack.await.map(|()| Settled::all_stored()) })
}
