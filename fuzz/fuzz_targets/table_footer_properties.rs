//! `Footer::decode`, `Properties::decode` and `BlockHandle::decode` on
//! arbitrary bytes, with round trips of what decodes.
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_table_footer_properties(data));
