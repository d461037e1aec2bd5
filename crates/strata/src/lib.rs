//! Strata: an embeddable, log-structured key-value store.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod env;
