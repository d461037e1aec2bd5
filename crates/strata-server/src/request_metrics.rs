//! Request figures the services record as requests complete: latency
//! histograms for reads and writes, request counts by method and outcome,
//! and the fsync-latency histogram the node's file system fills.
//!
//! Role: the one piece of the metrics the serving path writes to, kept
//! apart from the endpoint (`metrics.rs`, which reads the node to render
//! scrapes), so the services import this and the endpoint imports the
//! services, with no circle between them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::health::FsyncSeconds;

/// Labels of a request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) method: &'static str,
    pub(crate) outcome: &'static str,
}

/// Metrics recorded as things happen, shared by the services, the file
/// system and the archiver.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    pub(crate) write_seconds: Histogram,
    pub(crate) read_seconds: Histogram,
    pub(crate) requests: Family<RequestLabels, Counter>,
    /// fsync latency of the database's files, by kind.
    pub(crate) fsync_seconds: FsyncSeconds,
}

impl RequestMetrics {
    /// Counts a replication call refused for its credential as outcome
    /// "denied" of its method.
    pub(crate) fn count_denied(&self, method: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                outcome: "denied",
            })
            .inc();
    }

    pub(crate) fn new() -> Self {
        // Every request series exists from the start, at 0, so rates and
        // ratios over them (the error-rate alerts) have series before the
        // first error: Kv methods by every outcome, Admin and Replication
        // methods as denied.
        let requests = Family::<RequestLabels, Counter>::default();
        for method in ["write", "get", "scan"] {
            for outcome in ["ok", "error", "denied"] {
                let _ = requests.get_or_create(&RequestLabels { method, outcome });
            }
        }
        for method in [
            "status",
            "digest",
            "ranges",
            "split_range",
            "merge_ranges",
            "promote",
            "subscribe",
            "begin_snapshot",
            "fetch_snapshot",
        ] {
            let _ = requests.get_or_create(&RequestLabels {
                method,
                outcome: "denied",
            });
        }
        // 20 µs to about 20 s, doubling.
        Self {
            write_seconds: Histogram::new(exponential_buckets(0.000_02, 2.0, 20)),
            read_seconds: Histogram::new(exponential_buckets(0.000_02, 2.0, 20)),
            requests,
            fsync_seconds: crate::health::fsync_seconds(),
        }
    }
}
