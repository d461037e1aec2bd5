//! `VersionEdit::decode` on arbitrary bytes (an edit that decodes encodes
//! and decodes again to itself), plus the manifest header, `CURRENT` and
//! file-name parsers.
//!
//! The check is shared with the stable corpus replay test; see
//! `fuzz/checks.rs`.

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_manifest_edit(data));
