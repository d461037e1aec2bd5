//! Routing by the range map, as pure functions: which group a batch goes
//! to, how a scan is cut into pieces at range boundaries, and how the
//! pieces' answers add up under one limit.
//!
//! Role: the rules of [`crate::ShardedClient`] without I/O, so they are
//! tested on their own. The client calls them again after every map
//! change; nothing here caches a map.
//!
//! Invariants: a batch is routed only when every key it touches (a
//! delete_range's whole `[start, end)`) lies in ranges of one group; the
//! pieces of a scan are disjoint, clipped to the scan's span, in the
//! order the scan reads them (forward: ascending starts; reverse:
//! descending), and together cover the span exactly; an assembly never
//! holds more entries than its limit. Nothing here panics or indexes.

use strata_cluster::{RangeEntry, RangeMap};
use strata_proto::v1::{Operation, operation};

use crate::error::Error;

/// A key span `[start, end)` (`end` `None`: to the end of the key space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: Vec<u8>,
    pub(crate) end: Option<Vec<u8>>,
}

impl Span {
    /// Whether the span holds no key.
    fn is_empty(&self) -> bool {
        self.end
            .as_deref()
            .is_some_and(|end| end <= self.start.as_slice())
    }
}

/// One piece of a scan: the part of the span inside one range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    /// The group owning the range.
    pub(crate) group: String,
    /// The part of the span in the range.
    pub(crate) span: Span,
}

/// The ranges `span` touches, in key order (the range of its start when
/// it is empty).
fn touched<'m>(map: &'m RangeMap, span: &Span) -> Vec<&'m RangeEntry> {
    if span.is_empty() {
        return vec![map.locate(&span.start)];
    }
    map.overlapping(&span.start, span.end.as_deref())
        .iter()
        .collect()
}

/// The group every key of `operations` belongs to, by `map`; an empty
/// batch goes to the group owning the empty key.
///
/// # Errors
/// [`Error::SpansGroups`] naming each range touched and its group when
/// the keys fall in ranges of more than one group.
pub(crate) fn route_batch(map: &RangeMap, operations: &[Operation]) -> Result<String, Error> {
    let mut ranges: Vec<&RangeEntry> = Vec::new();
    for op in operations {
        let span = if op.kind == operation::Kind::DeleteRange as i32 {
            Span {
                start: op.key.clone(),
                end: Some(op.value.clone()),
            }
        } else {
            Span {
                start: op.key.clone(),
                end: None,
            }
        };
        let entries = if span.end.is_none() {
            vec![map.locate(&span.start)]
        } else {
            touched(map, &span)
        };
        for entry in entries {
            if !ranges.iter().any(|r| r.start == entry.start) {
                ranges.push(entry);
            }
        }
    }
    ranges.sort_by(|a, b| a.start.cmp(&b.start));
    let Some(first) = ranges.first() else {
        return Ok(map.locate(b"").group.clone());
    };
    if ranges.iter().all(|r| r.group == first.group) {
        return Ok(first.group.clone());
    }
    let named: Vec<String> = ranges
        .iter()
        .map(|r| format!("{} in {}", r.describe(), r.group))
        .collect();
    Err(Error::SpansGroups {
        ranges: named.join(", "),
        map_revision: map.revision(),
    })
}

/// `span` cut at the range boundaries of `map`, in the order a scan
/// (`reverse` or not) reads them. An empty span is one piece, in the
/// range of its start (the node answers it with no entry).
pub(crate) fn scan_pieces(map: &RangeMap, span: &Span, reverse: bool) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = touched(map, span)
        .into_iter()
        .map(|entry| {
            let start = if entry.start > span.start {
                entry.start.clone()
            } else {
                span.start.clone()
            };
            let end = match (&entry.end, &span.end) {
                (None, end) | (end, None) => end.clone(),
                (Some(a), Some(b)) => Some(a.min(b).clone()),
            };
            Piece {
                group: entry.group.clone(),
                span: Span { start, end },
            }
        })
        .collect();
    if reverse {
        pieces.reverse();
    }
    pieces
}

/// What is left of `span` once `piece` (one of its pieces, read whole)
/// is done; `None` when nothing is.
pub(crate) fn remaining(span: &Span, piece: &Span, reverse: bool) -> Option<Span> {
    if reverse {
        // Read from the top down: the rest lies below the piece's start.
        (piece.start > span.start).then(|| Span {
            start: span.start.clone(),
            end: Some(piece.start.clone()),
        })
    } else {
        let end = piece.end.clone()?;
        let rest = Span {
            start: end,
            end: span.end.clone(),
        };
        (!rest.is_empty()).then_some(rest)
    }
}

/// The entries of a scan gathered piece by piece under one limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assembly {
    /// At most this many entries in all (0: no limit across pieces; each
    /// piece gets the node's default).
    limit: u32,
    pub(crate) entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether entries may have been left out.
    pub(crate) more: bool,
}

impl Assembly {
    pub(crate) fn new(limit: u32) -> Assembly {
        Assembly {
            limit,
            entries: Vec::new(),
            more: false,
        }
    }

    fn taken(&self) -> u32 {
        u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }

    /// The limit to send with the next piece (0: the node's default).
    pub(crate) fn piece_limit(&self) -> u32 {
        if self.limit == 0 {
            0
        } else {
            self.limit.saturating_sub(self.taken()).max(1)
        }
    }

    /// Adds one piece's answer (`cut`: the node said its limit left
    /// entries out; `last`: no piece follows). Returns whether the scan
    /// goes on to the next piece. A cut piece ends the scan (what follows
    /// it would leave a gap); so does reaching the limit, and then `more`
    /// is set if a piece follows (it may hold entries).
    pub(crate) fn add(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>, cut: bool, last: bool) -> bool {
        for entry in entries {
            if self.limit != 0 && self.taken() >= self.limit {
                self.more = true;
                return false;
            }
            self.entries.push(entry);
        }
        if cut {
            self.more = true;
            return false;
        }
        if self.limit != 0 && self.taken() >= self.limit {
            self.more |= !last;
            return false;
        }
        !last
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn entry(start: &[u8], end: Option<&[u8]>, group: &str) -> RangeEntry {
        RangeEntry {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            group: group.into(),
            split_version: 1,
            move_version: 1,
            moving: None,
            mod_revision: 1,
        }
    }

    /// `["", f)` g1, `[f, m)` g1, `[m, t)` g2, `[t, end)` g3.
    fn map() -> RangeMap {
        RangeMap::new(
            vec![
                entry(b"", Some(b"f"), "g1"),
                entry(b"f", Some(b"m"), "g1"),
                entry(b"m", Some(b"t"), "g2"),
                entry(b"t", None, "g3"),
            ],
            42,
        )
        .unwrap()
    }

    fn op(kind: operation::Kind, key: &[u8], value: &[u8]) -> Operation {
        Operation {
            kind: kind as i32,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn put(key: &[u8]) -> Operation {
        op(operation::Kind::Put, key, b"v")
    }

    fn span(start: &[u8], end: Option<&[u8]>) -> Span {
        Span {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_batch_within_one_group_goes_to_it_even_over_two_of_its_ranges() {
        let map = map();
        assert_eq!(route_batch(&map, &[put(b"a")]).unwrap(), "g1");
        // Two ranges of g1, and a delete_range across their boundary.
        let ops = [
            put(b"a"),
            op(operation::Kind::Delete, b"g", b""),
            op(operation::Kind::DeleteRange, b"c", b"k"),
        ];
        assert_eq!(route_batch(&map, &ops).unwrap(), "g1");
        assert_eq!(route_batch(&map, &[put(b"zz")]).unwrap(), "g3");
        // A delete_range ending exactly at a boundary stays inside.
        let ops = [op(operation::Kind::DeleteRange, b"m", b"t")];
        assert_eq!(route_batch(&map, &ops).unwrap(), "g2");
        assert_eq!(route_batch(&map, &[]).unwrap(), "g1");
    }

    #[test]
    fn a_batch_over_two_groups_is_refused_naming_the_ranges_and_groups() {
        let map = map();
        let err = route_batch(&map, &[put(b"a"), put(b"n")]).unwrap_err();
        let Error::SpansGroups {
            ranges,
            map_revision,
        } = &err
        else {
            panic!("expected SpansGroups, got {err}");
        };
        assert_eq!(*map_revision, 42);
        assert_eq!(ranges, r#"["", "f") in g1, ["m", "t") in g2"#);
    }

    #[test]
    fn a_delete_range_over_a_group_boundary_is_refused() {
        let map = map();
        let ops = [op(operation::Kind::DeleteRange, b"k", b"n")];
        let Error::SpansGroups { ranges, .. } = route_batch(&map, &ops).unwrap_err() else {
            panic!("expected SpansGroups");
        };
        assert_eq!(ranges, r#"["f", "m") in g1, ["m", "t") in g2"#);
        // One past the boundary is enough.
        let ops = [op(operation::Kind::DeleteRange, b"a", b"m\0")];
        assert!(route_batch(&map, &ops).is_err());
        // An empty delete_range touches only the range of its start.
        let ops = [op(operation::Kind::DeleteRange, b"n", b"a")];
        assert_eq!(route_batch(&map, &ops).unwrap(), "g2");
    }

    fn shown(pieces: &[Piece]) -> Vec<(String, Span)> {
        pieces
            .iter()
            .map(|p| (p.group.clone(), p.span.clone()))
            .collect()
    }

    #[test]
    fn a_scan_is_cut_at_range_boundaries_forward_and_reverse() {
        let map = map();
        let whole = span(b"c", Some(b"p"));
        let forward = scan_pieces(&map, &whole, false);
        assert_eq!(
            shown(&forward),
            vec![
                ("g1".into(), span(b"c", Some(b"f"))),
                ("g1".into(), span(b"f", Some(b"m"))),
                ("g2".into(), span(b"m", Some(b"p"))),
            ]
        );
        let mut reverse = scan_pieces(&map, &whole, true);
        reverse.reverse();
        assert_eq!(reverse, forward);
        // Unbounded on both sides: every range, whole.
        let all = scan_pieces(&map, &span(b"", None), false);
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].span, span(b"t", None));
        // Inside one range: one piece; an empty span: one piece.
        assert_eq!(scan_pieces(&map, &span(b"n", Some(b"o")), false).len(), 1);
        let empty = scan_pieces(&map, &span(b"q", Some(b"b")), false);
        assert_eq!(shown(&empty), vec![("g2".into(), span(b"q", Some(b"b")))]);
    }

    #[test]
    fn what_remains_after_a_piece_is_the_rest_of_the_span_in_scan_order() {
        let whole = span(b"c", Some(b"p"));
        assert_eq!(
            remaining(&whole, &span(b"c", Some(b"f")), false),
            Some(span(b"f", Some(b"p")))
        );
        assert_eq!(remaining(&whole, &span(b"m", Some(b"p")), false), None);
        assert_eq!(
            remaining(&whole, &span(b"m", Some(b"p")), true),
            Some(span(b"c", Some(b"m")))
        );
        assert_eq!(remaining(&whole, &span(b"c", Some(b"f")), true), None);
        let open = span(b"c", None);
        assert_eq!(remaining(&open, &span(b"t", None), false), None);
    }

    /// Runs a scan over `data` cut by `map`, each piece answered by a fake
    /// node that applies the piece's limit: the client's loop, without I/O.
    fn scan(map: &RangeMap, data: &[&str], whole: Span, reverse: bool, limit: u32) -> Assembly {
        let mut assembly = Assembly::new(limit);
        let mut rest = Some(whole);
        while let Some(span_now) = rest.take() {
            let pieces = scan_pieces(map, &span_now, reverse);
            let piece = pieces.first().unwrap().clone();
            let mut keys: Vec<&str> = data
                .iter()
                .copied()
                .filter(|k| {
                    k.as_bytes() >= piece.span.start.as_slice()
                        && piece.span.end.as_deref().is_none_or(|e| k.as_bytes() < e)
                })
                .collect();
            if reverse {
                keys.reverse();
            }
            let node_limit = match assembly.piece_limit() {
                0 => 1000,
                n => n as usize,
            };
            let cut = keys.len() > node_limit;
            keys.truncate(node_limit);
            let entries = keys
                .iter()
                .map(|k| (k.as_bytes().to_vec(), b"v".to_vec()))
                .collect();
            if assembly.add(entries, cut, pieces.len() == 1) {
                rest = remaining(&span_now, &piece.span, reverse);
            }
        }
        assembly
    }

    fn keys(assembly: &Assembly) -> Vec<String> {
        assembly
            .entries
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect()
    }

    const DATA: [&str; 8] = ["a", "d", "g", "h", "n", "s", "u", "z"];

    #[test]
    fn pieces_are_concatenated_in_key_order_under_one_limit() {
        let map = map();
        let all = scan(&map, &DATA, span(b"", None), false, 0);
        assert_eq!(keys(&all), DATA);
        assert!(!all.more);
        let back = scan(&map, &DATA, span(b"", None), true, 0);
        let mut expected = DATA.to_vec();
        expected.reverse();
        assert_eq!(keys(&back), expected);
        assert!(!back.more);
        // A limit crossing pieces: three from g1's two ranges and g2.
        let three = scan(&map, &DATA, span(b"e", Some(b"t")), false, 3);
        assert_eq!(keys(&three), ["g", "h", "n"]);
        assert!(three.more, "a piece was cut");
        let three_back = scan(&map, &DATA, span(b"e", Some(b"t")), true, 3);
        assert_eq!(keys(&three_back), ["s", "n", "h"]);
        assert!(three_back.more);
        // A limit reached exactly at the end of the last piece: no more.
        let exact = scan(&map, &DATA, span(b"e", Some(b"t")), false, 4);
        assert_eq!(keys(&exact), ["g", "h", "n", "s"]);
        assert!(!exact.more);
        // Reached at the end of a piece with pieces after it: maybe more.
        let at_boundary = scan(&map, &DATA, span(b"", Some(b"m")), false, 2);
        assert_eq!(keys(&at_boundary), ["a", "d"]);
        assert!(at_boundary.more);
    }

    #[test]
    fn an_assembly_never_exceeds_its_limit_even_if_a_node_does() {
        let mut assembly = Assembly::new(2);
        let three = vec![
            (b"a".to_vec(), Vec::new()),
            (b"b".to_vec(), Vec::new()),
            (b"c".to_vec(), Vec::new()),
        ];
        assert!(!assembly.add(three, false, true));
        assert_eq!(assembly.entries.len(), 2);
        assert!(assembly.more);
    }
}
