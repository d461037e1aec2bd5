//! `Block::new` on arbitrary bytes, then iteration forward and backward and
//! seeks: never a panic, and consistent answers on blocks that read.
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_table_block(data));
