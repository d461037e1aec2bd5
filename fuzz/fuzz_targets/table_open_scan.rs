//! `TableReader::open` on arbitrary bytes, then scans, seeks and gets; or,
//! in the structured mode, a table built from fuzz-derived entries and
//! mutated, whose every read must fail or return exactly the original data.
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_table_open_scan(data));
