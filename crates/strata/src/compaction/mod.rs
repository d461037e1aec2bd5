//! Compaction: the policy ([`pick`], a pure function) and the mechanism
//! ([`worker`], which also writes flushes).

pub(crate) mod pick;
pub(crate) mod worker;
