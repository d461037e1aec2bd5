//! Cursors over sorted tables: one table ([`TableCursor`]) or one
//! non-overlapping level ([`LevelCursor`]), in one direction, within a key
//! range.
//!
//! Thread-safety: a cursor belongs to one thread; the tables it reads are
//! shared (`Arc`).

use std::ops::Bound;
use std::sync::Arc;

use self_cell::self_cell;
use strata_format::key::{MAX_SEQ, ValueKind, encode_internal_key};
use strata_format::table::TableIter;

use super::Table;
use crate::error::{Error, Result};
use crate::merge::{Cursor, EntryRef, KeyRange};

type Iter<'x> = TableIter<'x, 'x>;

self_cell!(
    struct CursorCell {
        owner: Arc<Table>,
        #[not_covariant]
        dependent: Iter,
    }
);

/// A cursor over one table's entries (every version) in one direction,
/// from the start (forward) or end (backward) of a key range.
pub(crate) struct TableCursor {
    cell: CursorCell,
    forward: bool,
    started: bool,
    /// The scan's range (shared by all its cursors).
    range: Arc<KeyRange>,
}

impl TableCursor {
    pub(crate) fn new(table: Arc<Table>, range: Arc<KeyRange>, forward: bool) -> Self {
        let cell = CursorCell::new(table, |table| table.iter());
        Self {
            cell,
            forward,
            started: false,
            range,
        }
    }

    /// Positions on the first entry in the cursor's direction; returns
    /// whether there is one.
    fn position(&mut self) -> std::result::Result<bool, strata_format::DecodeError> {
        let forward = self.forward;
        let range = Arc::clone(&self.range);
        let start = if forward { &range.start } else { &range.end };
        self.cell.with_dependent_mut(|_, iter| {
            let target = |user_key: &[u8], seq: u64, kind: ValueKind| {
                let mut key = Vec::with_capacity(user_key.len() + 8);
                encode_internal_key(user_key, seq, kind, &mut key);
                key
            };
            if forward {
                match start {
                    Bound::Unbounded => iter.seek_to_first(),
                    Bound::Included(k) => iter.seek(&target(k, MAX_SEQ, ValueKind::FOR_SEEK)),
                    Bound::Excluded(k) => {
                        let mut valid = iter.seek(&target(k, 0, ValueKind::Delete))?;
                        while valid
                            && iter
                                .current()
                                .is_some_and(|(key, _)| key.user_key == k.as_slice())
                        {
                            valid = iter.next()?;
                        }
                        Ok(valid)
                    }
                }
            } else {
                match start {
                    Bound::Unbounded => iter.seek_to_last(),
                    Bound::Included(k) => {
                        if iter.seek(&target(k, 0, ValueKind::Delete))? {
                            if iter
                                .current()
                                .is_some_and(|(key, _)| key.user_key == k.as_slice())
                            {
                                Ok(true)
                            } else {
                                iter.prev()
                            }
                        } else {
                            iter.seek_to_last()
                        }
                    }
                    Bound::Excluded(k) => {
                        if iter.seek(&target(k, MAX_SEQ, ValueKind::FOR_SEEK))? {
                            iter.prev()
                        } else {
                            iter.seek_to_last()
                        }
                    }
                }
            }
        })
    }
}

impl Cursor for TableCursor {
    fn advance(&mut self) -> Result<bool> {
        let valid = if self.started {
            let forward = self.forward;
            self.cell
                .with_dependent_mut(|_, iter| if forward { iter.next() } else { iter.prev() })
        } else {
            self.started = true;
            self.position()
        };
        valid.map_err(|e| Error::corruption(self.cell.borrow_owner().path(), e))
    }

    fn entry(&self) -> EntryRef<'_> {
        self.cell
            .with_dependent(|_, iter| match iter.current_raw() {
                Some((internal_key, value)) => EntryRef {
                    internal_key,
                    value,
                },
                None => EntryRef::EMPTY,
            })
    }
}

/// Opens a table of a version (through the database's table cache).
pub(crate) type OpenFn = Box<dyn Fn(&crate::version::TableMeta) -> Result<Arc<Table>> + Send>;

/// A cursor over the tables of one level of 1 or below, which do not
/// overlap: it opens and positions only the table the scan is in, moving to
/// the next one (in the scan's direction) when it is exhausted.
pub(crate) struct LevelCursor {
    /// The version whose level this walks (held, not copied).
    version: Arc<crate::version::Version>,
    level: usize,
    /// The level's tables that overlap the range: `tables[first..end]`.
    first: usize,
    end: usize,
    /// How many tables were started, from the front (forward) or back.
    started: usize,
    current: Option<TableCursor>,
    range: Arc<KeyRange>,
    forward: bool,
    open: OpenFn,
}

impl LevelCursor {
    /// A cursor over `version`'s level `level` (1 or deeper: tables in key
    /// order, not overlapping), restricted to the tables overlapping
    /// `range`; `None` if there are none.
    pub(crate) fn new(
        version: Arc<crate::version::Version>,
        level: usize,
        range: Arc<KeyRange>,
        forward: bool,
        open: OpenFn,
    ) -> Option<Self> {
        let tables = version.levels.get(level)?;
        let (start, end) = range.user_bounds();
        let first = start.map_or(0, |s| tables.partition_point(|t| t.largest_user_key() < s));
        let end = end.map_or(tables.len(), |e| {
            tables.partition_point(|t| t.smallest_user_key() <= e)
        });
        (first < end).then_some(Self {
            version,
            level,
            first,
            end,
            started: 0,
            current: None,
            range,
            forward,
            open,
        })
    }
}

impl Cursor for LevelCursor {
    fn advance(&mut self) -> Result<bool> {
        loop {
            if let Some(cursor) = &mut self.current {
                if cursor.advance()? {
                    return Ok(true);
                }
                self.current = None;
            }
            let count = self.end - self.first;
            if self.started == count {
                return Ok(false);
            }
            let index = if self.forward {
                self.first + self.started
            } else {
                self.end - 1 - self.started
            };
            self.started += 1;
            let Some(meta) = self
                .version
                .levels
                .get(self.level)
                .and_then(|t| t.get(index))
            else {
                return Ok(false);
            };
            let table = (self.open)(meta)?;
            self.current = Some(TableCursor::new(
                table,
                Arc::clone(&self.range),
                self.forward,
            ));
        }
    }

    fn entry(&self) -> EntryRef<'_> {
        self.current.as_ref().map_or(EntryRef::EMPTY, Cursor::entry)
    }
}
