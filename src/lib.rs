//! Shared helpers for Strata's integration tests and benches.
