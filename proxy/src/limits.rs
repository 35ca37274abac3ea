//! How many calls the proxy carries at once, in all and for one caller. A call past a limit is
//! refused at once with `RESOURCE_EXHAUSTED`, so admitted calls keep their latency and the
//! proxy its memory instead of queueing without bound, and one caller cannot take what the
//! others need. Long polls are counted apart: they wait on Temporal's task queues, not on
//! its work, and a worker fleet holds many for minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use plinth_identity::{Caller, Identity};

/// The limits, as `[proxy]` sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Calls other than long polls in flight at once.
    pub max_concurrent_calls: usize,
    /// The same, of one caller (the identity its certificate names).
    pub max_calls_per_identity: usize,
    /// Long polls (`Poll*` RPCs) waiting at once.
    pub max_long_polls: usize,
    /// The same, of one caller.
    pub max_long_polls_per_identity: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 2048,
            max_calls_per_identity: 256,
            max_long_polls: 8192,
            max_long_polls_per_identity: 2048,
        }
    }
}

/// Which count a call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Call,
    LongPoll,
}

/// The limit a call was refused at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    Calls(usize),
    CallsOfCaller(usize),
    LongPolls(usize),
    LongPollsOfCaller(usize),
}

impl Refused {
    /// The label `plinth_proxy_limited_total` counts it under.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::Calls(_) => "calls",
            Refused::CallsOfCaller(_) => "calls_per_identity",
            Refused::LongPolls(_) => "long_polls",
            Refused::LongPollsOfCaller(_) => "long_polls_per_identity",
        }
    }

    /// What the caller is told: the limit and the setting, so an operator knows what to raise.
    pub(crate) fn status(self) -> tonic::Status {
        let message = match self {
            Refused::Calls(max) => format!(
                "the proxy is carrying {max} calls, its limit ([proxy] max_concurrent_calls); try again shortly"
            ),
            Refused::CallsOfCaller(max) => format!(
                "you have {max} calls in flight, the most one caller may ([proxy] max_calls_per_identity); try again shortly"
            ),
            Refused::LongPolls(max) => format!(
                "the proxy holds {max} long polls, its limit ([proxy] max_long_polls); try again shortly"
            ),
            Refused::LongPollsOfCaller(max) => format!(
                "you have {max} long polls waiting, the most one caller may ([proxy] max_long_polls_per_identity); try again shortly"
            ),
        };
        tonic::Status::resource_exhausted(message)
    }
}

/// Calls in flight, by kind and by caller.
#[derive(Debug)]
pub(crate) struct InFlight {
    limits: CallLimits,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    all: PerKind,
    by_identity: HashMap<Identity, PerKind>,
    /// Callers without an identity (refused further on), counted as one.
    unnamed: PerKind,
}

#[derive(Debug, Default, Clone, Copy)]
struct PerKind {
    calls: usize,
    polls: usize,
}

impl PerKind {
    fn of(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Call => &mut self.calls,
            Kind::LongPoll => &mut self.polls,
        }
    }

    fn get(self, kind: Kind) -> usize {
        match kind {
            Kind::Call => self.calls,
            Kind::LongPoll => self.polls,
        }
    }

    fn is_empty(self) -> bool {
        self.calls == 0 && self.polls == 0
    }
}

impl Counts {
    fn of_caller(&mut self, caller: &Caller) -> &mut PerKind {
        match &caller.0 {
            Ok(identity) => {
                // Only a caller's first call in flight clones its identity.
                if !self.by_identity.contains_key(identity) {
                    self.by_identity
                        .insert(identity.clone(), PerKind::default());
                }
                self.by_identity.get_mut(identity).expect("inserted above")
            }
            Err(_) => &mut self.unnamed,
        }
    }
}

impl InFlight {
    pub(crate) fn new(limits: CallLimits) -> Self {
        Self {
            limits,
            counts: Mutex::default(),
        }
    }

    /// Counts one call of `caller`'s until the returned admission is dropped, unless a limit
    /// is reached.
    pub(crate) fn admit(
        self: &Arc<Self>,
        caller: &Arc<Caller>,
        kind: Kind,
    ) -> Result<Admission, Refused> {
        let (max, max_of_caller) = match kind {
            Kind::Call => (
                Refused::Calls(self.limits.max_concurrent_calls),
                Refused::CallsOfCaller(self.limits.max_calls_per_identity),
            ),
            Kind::LongPoll => (
                Refused::LongPolls(self.limits.max_long_polls),
                Refused::LongPollsOfCaller(self.limits.max_long_polls_per_identity),
            ),
        };
        let limit = |refused: Refused| match refused {
            Refused::Calls(n)
            | Refused::CallsOfCaller(n)
            | Refused::LongPolls(n)
            | Refused::LongPollsOfCaller(n) => n,
        };
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.all.get(kind) >= limit(max) {
            return Err(max);
        }
        let of_caller = *counts.of_caller(caller);
        if of_caller.get(kind) >= limit(max_of_caller) {
            if of_caller.is_empty() {
                // A limit of 0 admits nothing; the entry just made is not kept.
                counts.forget(caller);
            }
            return Err(max_of_caller);
        }
        *counts.of_caller(caller).of(kind) += 1;
        *counts.all.of(kind) += 1;
        Ok(Admission {
            in_flight: self.clone(),
            caller: caller.clone(),
            kind,
        })
    }

    fn release(&self, caller: &Caller, kind: Kind) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.all.of(kind) -= 1;
        let of_caller = counts.of_caller(caller);
        *of_caller.of(kind) -= 1;
        if of_caller.is_empty() {
            counts.forget(caller);
        }
    }
}

impl Counts {
    /// Drops `caller`'s entry, so the map holds only callers with calls in flight.
    fn forget(&mut self, caller: &Caller) {
        if let Ok(identity) = &caller.0 {
            self.by_identity.remove(identity);
        }
    }
}

/// One call counted in flight; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: Arc<InFlight>,
    caller: Arc<Caller>,
    kind: Kind,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.in_flight.release(&self.caller, self.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str) -> Arc<Caller> {
        Arc::new(Caller(Ok(Identity::user(name).unwrap())))
    }

    fn limits(calls: usize, of_caller: usize) -> Arc<InFlight> {
        Arc::new(InFlight::new(CallLimits {
            max_concurrent_calls: calls,
            max_calls_per_identity: of_caller,
            max_long_polls: 1,
            max_long_polls_per_identity: 1,
        }))
    }

    #[test]
    fn a_caller_past_its_own_limit_is_refused_while_others_are_admitted() {
        let in_flight = limits(10, 2);
        let (alice, bob) = (caller("alice@example.com"), caller("bob@example.com"));
        let held: Vec<_> = (0..2)
            .map(|_| in_flight.admit(&alice, Kind::Call).unwrap())
            .collect();
        assert_eq!(
            in_flight.admit(&alice, Kind::Call).unwrap_err(),
            Refused::CallsOfCaller(2)
        );
        let _bob = in_flight.admit(&bob, Kind::Call).unwrap();
        drop(held);
        in_flight.admit(&alice, Kind::Call).unwrap();
    }

    #[test]
    fn the_proxy_wide_limit_holds_across_callers_and_frees_as_calls_end() {
        let in_flight = limits(2, 2);
        let first = in_flight
            .admit(&caller("a@example.com"), Kind::Call)
            .unwrap();
        let _second = in_flight
            .admit(&caller("b@example.com"), Kind::Call)
            .unwrap();
        let third = caller("c@example.com");
        assert_eq!(
            in_flight.admit(&third, Kind::Call).unwrap_err(),
            Refused::Calls(2)
        );
        drop(first);
        in_flight.admit(&third, Kind::Call).unwrap();
    }

    #[test]
    fn long_polls_are_counted_apart_from_calls() {
        let in_flight = limits(1, 1);
        let alice = caller("alice@example.com");
        let _call = in_flight.admit(&alice, Kind::Call).unwrap();
        let _poll = in_flight.admit(&alice, Kind::LongPoll).unwrap();
        assert_eq!(
            in_flight.admit(&alice, Kind::LongPoll).unwrap_err(),
            Refused::LongPolls(1)
        );
    }

    #[test]
    fn only_callers_with_calls_in_flight_are_remembered() {
        let in_flight = limits(10, 0);
        assert!(
            in_flight
                .admit(&caller("a@example.com"), Kind::Call)
                .is_err()
        );
        let in_flight = limits(10, 5);
        for n in 0..100 {
            drop(in_flight.admit(&caller(&format!("u{n}@example.com")), Kind::Call));
        }
        let counts = in_flight.counts.lock().unwrap();
        assert!(counts.by_identity.is_empty());
        assert_eq!(counts.all.calls, 0);
    }
}
