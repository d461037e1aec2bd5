//! Regression (issue 12): `Admin.Digest` took no sequence number, so a
//! replica could not be checked against its primary while writes went on.
//! Digests as of one sequence number (one the node is past, from its digest
//! points and its log; one it has not reached yet, after waiting) agree
//! between a primary, a full replica and a range-scoped one while a writer
//! runs, equal a model of the writes, and a replica damaged behind the
//! engine's back (a value in its log rewritten, checksum fixed) differs in
//! exactly the piece of the key range holding the damage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata::{Db, Options, SeqNo, WriteBatch, WriteOptions};
use strata_replication::digest::{Digest, DigestError, DigestPoints, DigestQuery};
use strata_replication::epoch::Epoch;
use strata_replication::{Replica, ReplicaConfig, SharedDb, Upstream, UpstreamConfig};
use tokio_stream::wrappers::TcpListenerStream;

const SPLITS: [&[u8]; 3] = [b"eu/", b"m", b"us/"];
const EU: (&[u8], &[u8]) = (b"eu/", b"eu0");

fn options() -> Options {
    Options {
        wal_segment_bytes_max: 64 << 10,
        memtable_bytes_max: 4 << 20,
        initial_split_points: SPLITS.iter().map(|s| s.to_vec()).collect(),
        ..Options::default()
    }
}

/// Takes a digest point of `db` every 20 ms (keeping 400 ms of them).
fn points(db: SharedDb) -> Arc<DigestPoints> {
    let points = Arc::new(DigestPoints::new(db, 20));
    let recorder = Arc::downgrade(&points);
    tokio::spawn(async move {
        while let Some(points) = recorder.upgrade() {
            points.record();
            drop(points);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    points
}

/// An operation of the model: put (value) or delete (none), or a range
/// deletion `[key, end)`.
#[derive(Clone)]
enum Op {
    Put(Vec<u8>, Option<Vec<u8>>),
    DeleteRange(Vec<u8>, Vec<u8>),
}

const PREFIXES: [&str; 4] = ["a/", "eu/", "m-", "us/"];

/// Each batch written, with its last sequence number.
type WriteLog = Arc<Mutex<Vec<(u64, Vec<Op>)>>>;

/// A piece's bounds, digest and keys.
type Piece = (Vec<u8>, Option<Vec<u8>>, u64, u64);

/// Writes small batches until `stop`, recording each with its last
/// sequence number.
fn writer(db: Arc<Db>, stop: Arc<AtomicBool>, log: WriteLog) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = WriteBatch::new();
        let mut ops = Vec::new();
        for j in 0..1 + i % 3 {
            let prefix = PREFIXES[((i + j) % 4) as usize];
            let key = format!("{prefix}{:04}", (i * 7 + j) % 300).into_bytes();
            if (i + j).is_multiple_of(11) {
                batch.delete(&key);
                ops.push(Op::Put(key, None));
            } else {
                let value = format!("v{i}-{j}").into_bytes();
                batch.put(&key, &value);
                ops.push(Op::Put(key, Some(value)));
            }
        }
        if i.is_multiple_of(97) {
            let start = format!("{}{:04}", PREFIXES[(i % 4) as usize], i % 250).into_bytes();
            let end = format!("{}{:04}", PREFIXES[(i % 4) as usize], i % 250 + 20).into_bytes();
            batch.delete_range(&start, &end);
            ops.push(Op::DeleteRange(start, end));
        }
        let seq = db
            .write(
                batch,
                &WriteOptions {
                    sync: i.is_multiple_of(10),
                },
            )
            .unwrap();
        log.lock().push((seq.get(), ops));
        i += 1;
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// The model's keys and values as of `seq` (a batch boundary).
fn model_at(log: &[(u64, Vec<Op>)], seq: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut state = BTreeMap::new();
    for (last, ops) in log.iter().filter(|(last, _)| *last <= seq) {
        let _ = last;
        for op in ops {
            match op {
                Op::Put(key, Some(value)) => {
                    state.insert(key.clone(), value.clone());
                }
                Op::Put(key, None) => {
                    state.remove(key);
                }
                Op::DeleteRange(start, end) => state.retain(|k, _| k < start || k >= end),
            }
        }
    }
    state
}

fn hash(state: &BTreeMap<Vec<u8>, Vec<u8>>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (key, value) in state {
        hasher.update(&(key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value);
    }
    hasher.digest()
}

/// (start, end, digest, keys) of each piece.
fn pieces(digest: &Digest) -> Vec<Piece> {
    digest
        .ranges
        .iter()
        .map(|r| (r.start.clone(), r.end.clone(), r.digest, r.keys))
        .collect()
}

async fn digest_of(
    points: &Arc<DigestPoints>,
    query: DigestQuery,
    held: Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> Result<Digest, DigestError> {
    let points = Arc::clone(points);
    tokio::task::spawn_blocking(move || points.digest(&query, &held))
        .await
        .unwrap()
}

fn eu_query(seq: SeqNo) -> DigestQuery {
    DigestQuery {
        range: Some((EU.0.to_vec(), Some(EU.1.to_vec()))),
        ..DigestQuery::at(seq)
    }
}

async fn serve(db: SharedDb, dir: &Path) -> std::net::SocketAddr {
    let mut config = UpstreamConfig::new(dir.join("primary.snapshots"));
    config.heartbeat_interval = Duration::from_millis(50);
    let upstream = Upstream::new(db, Epoch::open(&dir.join("primary")).unwrap(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = upstream.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

fn replica_config(dir: &Path, addr: std::net::SocketAddr, name: &str) -> ReplicaConfig {
    let mut config = ReplicaConfig::new(format!("http://{addr}"), name, dir.join(name));
    config.options = options();
    config.backoff_max = Duration::from_millis(200);
    config
}

/// Rewrites `from` (unique in the replica's log) to `to` (same length) in
/// its log segment, fixing the enclosing record's checksum.
fn damage_log(data_dir: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    for entry in std::fs::read_dir(data_dir.join("wal")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let Some(at) = bytes.windows(from.len()).position(|w| w == from) else {
            continue;
        };
        let mut offset = strata_format::wal::SEGMENT_HEADER_LEN;
        loop {
            let framed = strata_format::wal::decode_record(&bytes[offset..])
                .unwrap()
                .framed_len;
            if at < offset + framed {
                bytes[at..at + to.len()].copy_from_slice(to);
                let crc = crc32fast::hash(&bytes[offset + 4..offset + framed]);
                bytes[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(&path, &bytes).unwrap();
                return;
            }
            offset += framed;
        }
    }
    panic!("{from:?} is in no log segment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digests_at_one_sequence_number_agree_while_writing_and_name_a_damaged_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = SharedDb::new(Db::open(dir.path().join("primary"), options()).unwrap());
    let addr = serve(db.clone(), dir.path()).await;
    let full = Replica::start(replica_config(dir.path(), addr, "full")).unwrap();
    let mut eu_config = replica_config(dir.path(), addr, "eu");
    eu_config.ranges = vec![(EU.0.to_vec(), Some(EU.1.to_vec()))];
    let eu = Replica::start(eu_config).unwrap();
    let (primary_points, full_points, eu_points) =
        (points(db.clone()), points(full.db()), points(eu.db()));
    let eu_held = eu.ranges().to_vec();

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let writing = {
        let (db, stop, log) = (db.get().unwrap(), Arc::clone(&stop), Arc::clone(&log));
        std::thread::spawn(move || writer(db, stop, log))
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut checked = 0;
    for round in 0..6 {
        let last = db.get().unwrap().last_seq();
        // Past for the primary (its points and log); a future one too.
        let at = if round % 2 == 0 {
            last
        } else {
            SeqNo(last.get() + 40)
        };
        let (p, f, e, p_eu) = tokio::join!(
            digest_of(&primary_points, DigestQuery::at(at), Vec::new()),
            digest_of(&full_points, DigestQuery::at(at), Vec::new()),
            digest_of(&eu_points, DigestQuery::at(at), eu_held.clone()),
            digest_of(&primary_points, eu_query(at), Vec::new()),
        );
        let (p, f, e, p_eu) = (p.unwrap(), f.unwrap(), e.unwrap(), p_eu.unwrap());
        assert_eq!(p.seq, at);
        assert!(p.keys > 0);
        assert_eq!((f.digest, f.keys), (p.digest, p.keys), "round {round}");
        assert_eq!(pieces(&f), pieces(&p));
        assert_eq!(p.ranges.len(), 4, "one piece per range: {:?}", pieces(&p));
        assert_eq!((e.digest, e.keys), (p_eu.digest, p_eu.keys));
        assert_eq!(pieces(&e), pieces(&p_eu));
        if round % 2 == 0 {
            let model = model_at(&log.lock(), at.get());
            assert_eq!((p.digest, p.keys), (hash(&model), model.len() as u64));
        }
        checked += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writing.join().unwrap();
    assert_eq!(checked, 6);

    // Not reached in time, and gone.
    let primary = db.get().unwrap();
    let later = SeqNo(primary.last_seq().get() + 1_000);
    let query = DigestQuery {
        timeout: Duration::from_millis(50),
        ..DigestQuery::at(later)
    };
    let error = digest_of(&primary_points, query, Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(error, DigestError::NotYet { .. }), "{error}");
    let error = digest_of(&primary_points, DigestQuery::at(SeqNo(1)), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(error, DigestError::Gone { .. }), "{error}");
    assert!(
        error.to_string().contains("digest points back to"),
        "{error}"
    );
    let error = digest_of(
        &eu_points,
        DigestQuery::at(primary.last_seq()),
        eu_held.clone(),
    )
    .await
    .map(|_| ());
    assert!(error.is_ok());
    let error = digest_of(
        &eu_points,
        DigestQuery {
            range: Some((b"a".to_vec(), None)),
            ..DigestQuery::at(primary.last_seq())
        },
        eu_held,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, DigestError::OutsideHeld), "{error}");

    // Damage: a value in the full replica's log, rewritten with a valid
    // checksum, under the range ["m", "us/").
    primary.put(b"m-damaged", b"GOOD-VALUE-0001").unwrap();
    let last = primary.put(b"a/after", b"x").unwrap();
    primary.sync().unwrap();
    let started = Instant::now();
    while full.figures().applied_seq < last.get() {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let config = replica_config(dir.path(), addr, "full");
    full.stop().await;
    drop(full);
    drop(full_points);
    tokio::time::sleep(Duration::from_millis(50)).await;
    damage_log(
        &dir.path().join("full"),
        b"GOOD-VALUE-0001",
        b"EVIL-VALUE-0001",
    );
    let full = Replica::start(config).unwrap();
    let full_points = points(full.db());
    let at = primary.put(b"us/later", b"y").unwrap();
    let (p, f) = tokio::join!(
        digest_of(&primary_points, DigestQuery::at(at), Vec::new()),
        digest_of(&full_points, DigestQuery::at(at), Vec::new()),
    );
    let (p, f) = (p.unwrap(), f.unwrap());
    assert_ne!(p.digest, f.digest, "the damage shows");
    let differing: Vec<_> = p
        .ranges
        .iter()
        .zip(&f.ranges)
        .filter(|(a, b)| a.digest != b.digest)
        .map(|(a, b)| {
            assert_eq!((&a.start, &a.end), (&b.start, &b.end));
            (a.start.clone(), a.end.clone())
        })
        .collect();
    assert_eq!(differing, vec![(b"m".to_vec(), Some(b"us/".to_vec()))]);
}
