//! polymq-storage: implementations of `polymq_core::Store` (memory and disk).
