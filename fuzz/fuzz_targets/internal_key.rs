//! `InternalKeyRef::decode` and `compare_internal` on three keys cut from
//! the input: round trips, and a total order consistent with decoding.
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_internal_key(data));
