//! `scan_segment` on arbitrary bytes, with `ScanParams` (mode, synced length,
//! expected first sequence number) taken from the first 11 bytes; a scan
//! that succeeds is consistent with the bytes and the parameters.
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_segment_scan(data));
