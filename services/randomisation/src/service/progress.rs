//! Where each stream had got to, kept between allocations (issue 11, item
//! 4): a sequence generator advanced to its next position, and a
//! minimisation trial's margins up to a position. An allocation continues
//! from there instead of regenerating the stream from position 0 or
//! reloading the trial's whole history.
//!
//! Both are pure functions of what is immutable once committed (the sealed
//! seed, the frozen definition, the allocations at positions before the
//! one asked for), so an entry is only ever a shortcut to the same value:
//! - an entry is used only for the same definition digest and algorithm
//!   version, and only when it is at or before the position the store
//!   reported under the lock; anything else starts again from position 0;
//! - an entry is taken out while in use, so a racing computation on the
//!   same stream (a lease that expired) starts afresh rather than share it;
//! - the commit stays fenced on the stream version, as before.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::methods::{Margins, Slot, StratumSequence};

/// Streams remembered per process; past it the memory starts over, which
/// only costs the next allocation of each stream a regeneration.
const MAX_ENTRIES: usize = 4096;

/// What an entry must match besides its key: the frozen design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Design {
    pub definition_sha256: String,
    pub algorithm_version: u32,
}

struct Entry<T> {
    design: Design,
    /// How many positions `state` accounts for.
    position: u64,
    state: T,
}

/// One entry per key, taken out while used.
struct Progress<K, T> {
    entries: Mutex<HashMap<K, Entry<T>>>,
}

impl<K: Hash + Eq, T> Progress<K, T> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entry for `key` if it matches `design` and is at or before `position`.
    fn take(&self, key: &K, design: &Design, position: u64) -> Option<(u64, T)> {
        let entry = self.lock().remove(key)?;
        (entry.design == *design && entry.position <= position)
            .then_some((entry.position, entry.state))
    }

    fn put(&self, key: K, design: Design, position: u64, state: T) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                design,
                position,
                state,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<T>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// (trial id, stream key).
type StreamId = (String, String);

/// Sequence generators, each advanced to the next position it will give.
pub(crate) struct SequenceProgress(Progress<StreamId, StratumSequence>);

impl SequenceProgress {
    pub fn new() -> Self {
        Self(Progress::new())
    }

    /// The slot at `position` of the stream, as `StratumSequence::slot_at`
    /// on `fresh()` would give it.
    pub fn slot_at(
        &self,
        stream: (&str, &str),
        design: &Design,
        position: u64,
        fresh: impl FnOnce() -> StratumSequence,
    ) -> Slot {
        let key = (stream.0.to_owned(), stream.1.to_owned());
        let (mut at, mut sequence) = self
            .0
            .take(&key, design, position)
            .unwrap_or_else(|| (0, fresh()));
        while at < position {
            sequence.next_slot();
            at += 1;
        }
        let slot = sequence.next_slot();
        self.0.put(key, design.clone(), position + 1, sequence);
        slot
    }
}

/// Minimisation margins of a trial, over its positions before `position`.
pub(crate) struct MarginProgress(Progress<String, Margins>);

impl MarginProgress {
    pub fn new() -> Self {
        Self(Progress::new())
    }

    /// Margins kept at or before `position`, with the position they cover.
    pub fn take(&self, trial_id: &str, design: &Design, position: u64) -> Option<(u64, Margins)> {
        self.0.take(&trial_id.to_owned(), design, position)
    }

    pub fn put(&self, trial_id: &str, design: Design, position: u64, margins: Margins) {
        self.0.put(trial_id.to_owned(), design, position, margins);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::SequenceMethod;
    use equipoise_stream::{MasterSeed, derive_stream};

    fn design(sha: &str) -> Design {
        Design {
            definition_sha256: sha.into(),
            algorithm_version: 1,
        }
    }

    fn fresh(stream: &str) -> StratumSequence {
        let method = SequenceMethod::Blocks(vec![2, 4, 6]);
        StratumSequence::new(
            &method,
            &[1, 1],
            derive_stream(&MasterSeed([7; 32]), stream, 1),
        )
    }

    fn expected(stream: &str, position: u64) -> Slot {
        fresh(stream).slot_at(position)
    }

    /// In order, skipping ahead (another replica allocated), going back (a
    /// fenced commit), under another design, and on another stream: always
    /// the slot regeneration from position 0 gives.
    #[test]
    fn kept_generators_give_the_seeded_stream() {
        let progress = SequenceProgress::new();
        let (a, b) = (design("a"), design("b"));
        let positions = [0, 1, 2, 5, 6, 6, 3, 4, 40, 41, 12];
        for position in positions {
            let slot = progress.slot_at(("T", "S1"), &a, position, || fresh("S1"));
            assert_eq!(slot, expected("S1", position), "position {position}");
        }
        for position in [0, 13, 14] {
            let other_design = progress.slot_at(("T", "S1"), &b, position, || fresh("S1"));
            assert_eq!(other_design, expected("S1", position));
            let other_stream = progress.slot_at(("T", "S2"), &a, position, || fresh("S2"));
            assert_eq!(other_stream, expected("S2", position));
        }
    }

    #[test]
    fn margins_are_kept_only_up_to_the_position_asked_for() {
        let progress = MarginProgress::new();
        let margins = Margins::new(&[2], 2);
        progress.put("T", design("a"), 5, margins.clone());
        assert!(progress.take("T", &design("a"), 4).is_none(), "ahead");
        progress.put("T", design("a"), 5, margins.clone());
        assert!(
            progress.take("T", &design("b"), 5).is_none(),
            "other design"
        );
        progress.put("T", design("a"), 5, margins.clone());
        assert_eq!(progress.take("T", &design("a"), 7), Some((5, margins)));
        assert!(progress.take("T", &design("a"), 7).is_none(), "taken out");
    }
}
