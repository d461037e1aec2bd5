//! `decode_batch` on arbitrary bytes; a batch that decodes rebuilds, with
//! `BatchBuilder`, to the same operations (and the same bytes when its
//! varints are in shortest form).
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_batch(data));
