//! What a node's refusal means: the one place that reads gRPC statuses and
//! their metadata.
//!
//! Role: the server contract, read at the edge. A write refused with
//! FAILED_PRECONDITION "not primary" names the primary in its metadata
//! (`strata-primary-node`, `strata-primary-address`, `strata-epoch`); a
//! write the node could not finish safely is answered UNAVAILABLE with
//! `strata-outcome: unknown`. A status the client library made itself
//! (it carries a source error) is a transport failure: one whose chain
//! holds a [`tonic::ConnectError`] never reached the node, any other may
//! have.
//!
//! The range map's refusals (the server contract of sharding): a key
//! the node's group does not own is FAILED_PRECONDITION "wrong group: ..."
//! with `strata-range-group` (the owner it believes) and
//! `strata-map-revision` (its map's revision, decimal); a range in the
//! cut-over of a move is UNAVAILABLE "range moving: ..." with
//! `strata-range-moving: 1`; a node without a map is UNAVAILABLE "no range
//! map ..."; a batch its map places in several groups is INVALID_ARGUMENT
//! "batch spans range groups: ...". None of them applied anything.
//!
//! Invariants: classification is a pure function of the status; metadata
//! that is missing or not text is treated as absent, never unwrapped.

use tonic::{Code, Status};

use crate::error::Error;

/// How a failed write must be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteFailure {
    /// The node is not its group's primary; it names the one it knows
    /// (`address` empty and `epoch` `None` when it knows none).
    NotPrimary {
        node: String,
        address: String,
        epoch: Option<u64>,
    },
    /// The node did not apply the write (it refused it as unavailable, or
    /// the connection never opened): safe to send elsewhere.
    NotApplied { detail: String },
    /// The write may have been applied: never retried.
    MaybeApplied { detail: String },
    /// A refusal by the range map (wrong group, range moving, no map):
    /// not applied, and for the caller to handle (it is not retried here).
    Range(RangeRefusal),
    /// A refusal a retry does not change.
    Final { code: Code, message: String },
}

/// A node's refusal by the range map (see the module doc). None of them
/// applied anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeRefusal {
    /// FAILED_PRECONDITION "wrong group: ..." with `strata-range-group`
    /// and `strata-map-revision`.
    WrongGroup {
        owner: Option<String>,
        map_revision: Option<i64>,
        said: String,
    },
    /// UNAVAILABLE "range moving: ..." (`strata-range-moving: 1`) or
    /// "no range map ...".
    Moving { said: String },
}

impl RangeRefusal {
    /// The refusal as the client's error, naming `node`.
    pub(crate) fn into_error(self, node: &str) -> Error {
        match self {
            RangeRefusal::WrongGroup {
                owner,
                map_revision,
                said,
            } => Error::WrongGroup {
                node: node.to_string(),
                owner,
                map_revision,
                said,
            },
            RangeRefusal::Moving { said } => Error::RangeMoving {
                node: node.to_string(),
                said,
            },
        }
    }
}

/// The message prefix of a node's refusal of a batch whose keys its map
/// places in several groups (INVALID_ARGUMENT).
pub(crate) const SPANS_GROUPS: &str = "batch spans range groups:";

/// The range-map refusal `status` is, if it is one. A status the client
/// library made itself never is.
pub(crate) fn range_refusal(status: &Status) -> Option<RangeRefusal> {
    if local(status) {
        return None;
    }
    let message = status.message();
    match status.code() {
        Code::FailedPrecondition if message.starts_with("wrong group:") => {
            Some(RangeRefusal::WrongGroup {
                owner: text(status, "strata-range-group")
                    .filter(|g| !g.is_empty())
                    .map(str::to_string),
                map_revision: text(status, "strata-map-revision").and_then(|r| r.parse().ok()),
                said: message.to_string(),
            })
        }
        Code::Unavailable
            if (message.starts_with("range moving:") || message.starts_with("no range map"))
                && text(status, "strata-outcome") != Some("unknown") =>
        {
            Some(RangeRefusal::Moving {
                said: message.to_string(),
            })
        }
        _ => None,
    }
}

/// Metadata text, if present and printable.
fn text<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

/// `code: message`, for attempts and errors.
pub(crate) fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Whether the status was made by the client library from a transport
/// failure (rather than sent by a node).
fn local(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// Whether the status is a transport failure that happened while opening
/// the connection, so the request never left this process.
pub(crate) fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The epoch a refusal names, if any.
pub(crate) fn refusal_epoch(status: &Status) -> Option<u64> {
    text(status, "strata-epoch").and_then(|e| e.parse().ok())
}

/// Classifies a failed write (see the module doc).
pub(crate) fn write_failure(status: &Status) -> WriteFailure {
    let detail = describe(status);
    if local(status) {
        return if never_sent(status) {
            WriteFailure::NotApplied { detail }
        } else {
            WriteFailure::MaybeApplied { detail }
        };
    }
    if let Some(refusal) = range_refusal(status) {
        return WriteFailure::Range(refusal);
    }
    match status.code() {
        Code::FailedPrecondition if status.message().starts_with("not primary") => {
            WriteFailure::NotPrimary {
                node: text(status, "strata-primary-node")
                    .unwrap_or_default()
                    .to_string(),
                address: text(status, "strata-primary-address")
                    .unwrap_or_default()
                    .to_string(),
                epoch: refusal_epoch(status),
            }
        }
        // A database fenced under a write that was admitted refuses it
        // (FAILED_PRECONDITION "fenced: ..."): not applied, and the node is
        // no longer primary.
        Code::FailedPrecondition if status.message().starts_with("fenced") => {
            WriteFailure::NotApplied { detail }
        }
        Code::Unavailable if text(status, "strata-outcome") == Some("unknown") => {
            WriteFailure::MaybeApplied { detail }
        }
        Code::Unavailable => WriteFailure::NotApplied { detail },
        Code::Unknown
        | Code::Internal
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::DataLoss => WriteFailure::MaybeApplied { detail },
        code => WriteFailure::Final {
            code,
            message: status.message().to_string(),
        },
    }
}

/// Whether a failed read should be answered as is (a retry elsewhere
/// would fail the same way), rather than tried on another node.
pub(crate) fn read_is_final(status: &Status) -> bool {
    !local(status)
        && matches!(
            status.code(),
            Code::InvalidArgument
                | Code::Unauthenticated
                | Code::PermissionDenied
                | Code::OutOfRange
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn with(mut status: Status, pairs: &[(&'static str, &'static str)]) -> Status {
        for (key, value) in pairs {
            status
                .metadata_mut()
                .insert(*key, MetadataValue::from_static(value));
        }
        status
    }

    #[test]
    fn not_primary_names_the_primary_from_the_metadata() {
        let status = with(
            Status::failed_precondition("not primary: this node follows n2"),
            &[
                ("strata-primary-node", "n2"),
                ("strata-primary-address", "http://127.0.0.1:7002"),
                ("strata-epoch", "9"),
            ],
        );
        assert_eq!(
            write_failure(&status),
            WriteFailure::NotPrimary {
                node: "n2".into(),
                address: "http://127.0.0.1:7002".into(),
                epoch: Some(9)
            }
        );
        let unknown = Status::failed_precondition("not primary: no primary known");
        assert_eq!(
            write_failure(&unknown),
            WriteFailure::NotPrimary {
                node: String::new(),
                address: String::new(),
                epoch: None
            }
        );
    }

    #[test]
    fn a_bad_epoch_is_absent_rather_than_a_panic() {
        let status = with(
            Status::failed_precondition("not primary"),
            &[("strata-epoch", "x9")],
        );
        assert_eq!(refusal_epoch(&status), None);
    }

    #[test]
    fn fenced_with_outcome_unknown_may_have_been_applied() {
        let fenced = with(
            Status::unavailable("fenced: lease lost"),
            &[("strata-outcome", "unknown")],
        );
        assert!(matches!(
            write_failure(&fenced),
            WriteFailure::MaybeApplied { .. }
        ));
        let fenced_db = Status::failed_precondition("fenced: this node lost its lease");
        assert!(matches!(
            write_failure(&fenced_db),
            WriteFailure::NotApplied { .. }
        ));
        let refused = Status::unavailable("fenced: lease not proven");
        assert!(matches!(
            write_failure(&refused),
            WriteFailure::NotApplied { .. }
        ));
        let other = Status::failed_precondition("range is being split");
        assert!(matches!(
            write_failure(&other),
            WriteFailure::Final {
                code: Code::FailedPrecondition,
                ..
            }
        ));
        assert!(matches!(
            write_failure(&Status::internal("x")),
            WriteFailure::MaybeApplied { .. }
        ));
    }

    #[test]
    fn reads_fail_at_once_only_on_what_every_node_would_refuse() {
        assert!(read_is_final(&Status::invalid_argument("empty key")));
        assert!(!read_is_final(&Status::unavailable("min_seq not reached")));
        assert!(!read_is_final(&Status::failed_precondition("x")));
    }

    #[test]
    fn range_map_refusals_are_told_apart_and_read_their_metadata() {
        let wrong = with(
            Status::failed_precondition("wrong group: \"n\" is owned by g2"),
            &[("strata-range-group", "g2"), ("strata-map-revision", "41")],
        );
        let expected = RangeRefusal::WrongGroup {
            owner: Some("g2".into()),
            map_revision: Some(41),
            said: "wrong group: \"n\" is owned by g2".into(),
        };
        assert_eq!(range_refusal(&wrong), Some(expected.clone()));
        assert_eq!(write_failure(&wrong), WriteFailure::Range(expected));
        // Missing or bad metadata is absent, not a panic.
        let bare = with(
            Status::failed_precondition("wrong group: x"),
            &[("strata-map-revision", "forty")],
        );
        assert!(matches!(
            range_refusal(&bare),
            Some(RangeRefusal::WrongGroup {
                owner: None,
                map_revision: None,
                ..
            })
        ));
        let moving = with(
            Status::unavailable("range moving: [\"m\", end) to g3"),
            &[("strata-range-moving", "1")],
        );
        assert!(matches!(
            write_failure(&moving),
            WriteFailure::Range(RangeRefusal::Moving { .. })
        ));
        let no_map = Status::unavailable("no range map yet");
        assert!(matches!(
            range_refusal(&no_map),
            Some(RangeRefusal::Moving { .. })
        ));
        // A refusal that says the outcome is unknown stays unknown.
        let unknown = with(
            Status::unavailable("range moving: cut over in flight"),
            &[("strata-outcome", "unknown")],
        );
        assert_eq!(range_refusal(&unknown), None);
        assert!(matches!(
            write_failure(&unknown),
            WriteFailure::MaybeApplied { .. }
        ));
        // Other codes with the same words are not range refusals.
        assert_eq!(range_refusal(&Status::internal("wrong group: x")), None);
        assert_eq!(range_refusal(&Status::unavailable("draining")), None);
    }
}
