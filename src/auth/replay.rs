//! Replay protection: each `(iss, jti)` is accepted once while its token is
//! valid (CDS Hooks 2.0: `jti` is "a nonce ... used to protect against replay
//! attacks").
//!
//! An entry can be forgotten once its token has expired (exp + skew), because
//! from then on the token is refused as expired anyway. Memory is bounded:
//! entries are fixed-size digests and their number is capped. When the cap is
//! reached with only unexpired entries, new tokens are refused rather than
//! evicting an entry whose token could then be replayed.
//!
//! The cache is per process. Behind a load balancer with several replicas a
//! token could be replayed once against each replica; closing that needs a
//! shared store.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

type Key = [u8; 32];

/// Why a `(iss, jti)` pair was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Seen before and not yet expired.
    Replayed,
    /// The cache is full of unexpired entries.
    Full,
}

#[derive(Debug)]
pub(crate) struct ReplayCache {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Digest of (iss, jti) → time after which it may be forgotten.
    seen: HashMap<Key, i64>,
    /// The same entries ordered by expiry, for cheap purging.
    by_expiry: BTreeSet<(i64, Key)>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Record `(iss, jti)` unless it was already seen. `forget_after` is the
    /// last second at which the token could still be accepted.
    pub(crate) fn check_and_insert(
        &self,
        iss: &str,
        jti: &str,
        forget_after: i64,
        now: i64,
    ) -> Result<(), Refused> {
        let key = digest(iss, jti);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.purge(now);
        if state.seen.contains_key(&key) {
            return Err(Refused::Replayed);
        }
        if state.seen.len() >= self.capacity {
            return Err(Refused::Full);
        }
        state.seen.insert(key, forget_after);
        state.by_expiry.insert((forget_after, key));
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

impl State {
    fn purge(&mut self, now: i64) {
        while let Some(&(forget_after, key)) = self.by_expiry.first()
            && forget_after < now
        {
            self.by_expiry.pop_first();
            self.seen.remove(&key);
        }
    }
}

/// Length-prefixed so that ("ab", "c") and ("a", "bc") differ.
fn digest(iss: &str, jti: &str) -> Key {
    let mut hasher = Sha256::new();
    hasher.update((iss.len() as u64).to_be_bytes());
    hasher.update(iss.as_bytes());
    hasher.update(jti.as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_use_is_refused_until_the_entry_expires() {
        let cache = ReplayCache::new(10);
        assert_eq!(cache.check_and_insert("iss", "j1", 100, 0), Ok(()));
        assert_eq!(
            cache.check_and_insert("iss", "j1", 100, 50),
            Err(Refused::Replayed)
        );
        assert_eq!(
            cache.check_and_insert("iss", "j1", 100, 100),
            Err(Refused::Replayed)
        );
        // After forget_after the entry is purged (the token itself is expired by then).
        assert_eq!(cache.check_and_insert("iss", "j1", 300, 101), Ok(()));
    }

    #[test]
    fn same_jti_from_another_issuer_is_a_different_token() {
        let cache = ReplayCache::new(10);
        assert_eq!(cache.check_and_insert("a", "j", 100, 0), Ok(()));
        assert_eq!(cache.check_and_insert("b", "j", 100, 0), Ok(()));
        assert_eq!(cache.check_and_insert("ab", "", 100, 0), Ok(()));
        assert_eq!(cache.check_and_insert("a", "bj", 100, 0), Ok(()));
    }

    #[test]
    fn full_cache_refuses_new_tokens_until_entries_expire() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.check_and_insert("i", "a", 10, 0), Ok(()));
        assert_eq!(cache.check_and_insert("i", "b", 20, 0), Ok(()));
        assert_eq!(cache.check_and_insert("i", "c", 30, 5), Err(Refused::Full));
        // "a" may be forgotten after t=10: room for one more, "b" still guarded.
        assert_eq!(cache.check_and_insert("i", "c", 30, 11), Ok(()));
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.check_and_insert("i", "b", 30, 11),
            Err(Refused::Replayed)
        );
    }
}
