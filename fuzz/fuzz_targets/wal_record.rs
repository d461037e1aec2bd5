//! `decode_record` on arbitrary bytes; a record that decodes re-encodes to
//! the same bytes.
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_record(data));
