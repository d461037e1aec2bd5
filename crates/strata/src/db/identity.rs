//! The database id: 128 random bits, created once, that tie every log
//! segment (and later every table and replica) to this database.
//!
//! FORMAT: the file `IDENTITY` holds the id as 32 lowercase hex digits and a
//! newline. It is created by writing `IDENTITY.tmp`, syncing it, renaming it
//! and syncing the directory, so it is either absent or whole.

use std::path::Path;

use crate::env::{FileSystem, OpenMode, write_file_atomically};
use crate::error::{Error, Result};

pub(crate) const IDENTITY_FILE_NAME: &str = "IDENTITY";

/// Reads the id, if the database exists.
pub(crate) fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<u128>> {
    let path = dir.join(IDENTITY_FILE_NAME);
    if !fs.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
        return Ok(None);
    }
    let file = fs
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut text = [0u8; 33];
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len != 33 {
        return Err(Error::corruption_msg(
            &path,
            0,
            format!("identity file is {len} bytes, expected 33"),
        ));
    }
    file.read_exact_at(&mut text, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    let digits = text.get(..32).and_then(|d| std::str::from_utf8(d).ok());
    match digits.map(|d| u128::from_str_radix(d, 16)) {
        Some(Ok(id)) if text.get(32) == Some(&b'\n') => Ok(Some(id)),
        _ => Err(Error::corruption_msg(
            &path,
            0,
            "identity file does not hold 32 hex digits and a newline",
        )),
    }
}

/// Creates a new id durably.
pub(crate) fn create(fs: &dyn FileSystem, dir: &Path) -> Result<u128> {
    let id: u128 = rand::random::<u128>().max(1);
    write_file_atomically(
        fs,
        dir,
        IDENTITY_FILE_NAME,
        format!("{id:032x}\n").as_bytes(),
    )?;
    Ok(id)
}
