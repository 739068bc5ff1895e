//! The store-wide poison flag: after one failed write or sync, no further write is accepted.
//!
//! Why (the rule fjall and PostgreSQL settled on after "fsyncgate"): when `write` or `fsync`
//! fails, Linux may already have dropped the dirty pages and cleared the error, so a retried
//! `fsync` can succeed while the data is gone. The file may also end in a partial frame that
//! later appends would bury in the middle of the log. Neither can be repaired in place; the only
//! safe answer is to refuse every later write (the caller stops acknowledging publishers) and
//! let recovery on the next open truncate the log to its last valid frame.
//!
//! # Invariants
//! - Once set, the flag is never cleared for the life of the store.
//! - Reads still work: they only return records that were fully written before the failure.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use polymq_core::StoreError;

/// Shared poison flag of one disk store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Poison(Arc<AtomicBool>);

impl Poison {
    /// `Err(Poisoned)` once an earlier write or sync failed.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.0.load(Ordering::Acquire) {
            Err(StoreError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Passes a write or sync result through, poisoning the store if it failed.
    pub(crate) fn guard<T>(&self, result: io::Result<T>) -> Result<T, StoreError> {
        result.map_err(|err| {
            tracing::error!(error = %err, "storage write failed; store poisoned");
            self.0.store(true, Ordering::Release);
            StoreError::Io(err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_poisons_for_good() {
        let poison = Poison::default();
        assert!(poison.check().is_ok());
        assert_eq!(poison.guard(Ok(3)).unwrap(), 3);
        assert!(poison.check().is_ok());
        let err = poison
            .guard::<()>(Err(io::Error::other("disk gone")))
            .unwrap_err();
        assert!(matches!(err, StoreError::Io(_)));
        assert!(matches!(poison.check(), Err(StoreError::Poisoned)));
        assert!(matches!(poison.clone().check(), Err(StoreError::Poisoned)));
    }
}
