//! How a `strata serve` node (from the example configs) serves `Kv`:
//! `Pipeline` answers come in request order, each with its request's
//! sequence and status, a bad request in the middle is answered with its
//! error while the rest are served; consecutive writes, which the node may
//! commit as one, each keep their own commit token; a client that stops reading its
//! answers holds back only its own stream, which then stops reading
//! requests (bounded memory), while other streams on the same connection
//! are served; and on a replica, reads waiting for a commit token hold up
//! no other read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_proto::v1::admin_client::AdminClient;
use strata_proto::v1::kv_client::KvClient;
use strata_proto::v1::{
    DeleteRequest, GetRequest, Operation, PipelineRequest, PipelineResponse, PutRequest,
    StatusRequest, WriteRequest, operation, pipeline_request, pipeline_response,
};
use tokio_stream::StreamExt;
use tonic::Code;

#[path = "common/node.rs"]
mod node;

use node::{Node, free_port};

async fn started(dir: &std::path::Path, name: &str, ports: &BTreeMap<&str, u16>) -> Node {
    let mut node = node::example(dir, "cluster", name, ports, |text| text);
    node.start();
    let started = Instant::now();
    loop {
        if let Ok(mut admin) = AdminClient::connect(node.grpc.clone()).await
            && admin.status(StatusRequest {}).await.is_ok()
        {
            return node;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} did not come up: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ports() -> BTreeMap<&'static str, u16> {
    let mut ports = BTreeMap::new();
    for port in ["7001", "7002", "9101", "9102"] {
        ports.insert(port, free_port());
    }
    ports
}

async fn primary(dir: &std::path::Path) -> Node {
    started(dir, "primary", &ports()).await
}

fn request(sequence: u64, operation: pipeline_request::Operation) -> PipelineRequest {
    PipelineRequest {
        sequence,
        operation: Some(operation),
    }
}

/// Sends `requests` on one `Pipeline` stream and collects every answer.
async fn pipeline_all(
    kv: &mut KvClient<tonic::transport::Channel>,
    requests: impl IntoIterator<Item = PipelineRequest>,
) -> Vec<PipelineResponse> {
    let requests: Vec<PipelineRequest> = requests.into_iter().collect();
    kv.pipeline(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap()
}

fn get(key: &str) -> pipeline_request::Operation {
    pipeline_request::Operation::Get(GetRequest {
        key: key.into(),
        ..GetRequest::default()
    })
}

fn put(key: &str, value: &[u8]) -> pipeline_request::Operation {
    pipeline_request::Operation::Put(PutRequest {
        key: key.into(),
        value: value.to_vec(),
        sync: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_is_answered_with_its_error_and_the_rest_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let primary = primary(dir.path()).await;
    let mut kv = KvClient::connect(primary.grpc.clone()).await.unwrap();
    let requests = vec![
        request(0, put("a", b"1")),
        request(1, get("a")),
        // An operation kind the node does not know.
        request(
            2,
            pipeline_request::Operation::Write(WriteRequest {
                operations: vec![Operation {
                    kind: 99,
                    key: b"x".to_vec(),
                    value: Vec::new(),
                }],
                ..WriteRequest::default()
            }),
        ),
        // No operation at all.
        PipelineRequest {
            sequence: 3,
            operation: None,
        },
        // A write of nothing.
        request(
            4,
            pipeline_request::Operation::Write(WriteRequest::default()),
        ),
        request(5, put("b", b"2")),
        request(6, get("b")),
        // A commit token the node will not reach in time.
        request(
            7,
            pipeline_request::Operation::Get(GetRequest {
                key: b"a".to_vec(),
                min_seq: u64::MAX / 2,
                timeout_millis: 1,
                ..GetRequest::default()
            }),
        ),
        request(
            8,
            pipeline_request::Operation::Delete(DeleteRequest {
                key: b"a".to_vec(),
                sync: true,
            }),
        ),
        request(9, get("a")),
        request(
            10,
            pipeline_request::Operation::Write(WriteRequest {
                operations: vec![
                    Operation {
                        kind: operation::Kind::Put as i32,
                        key: b"c".to_vec(),
                        value: b"3".to_vec(),
                    },
                    Operation {
                        kind: operation::Kind::Put as i32,
                        key: b"d".to_vec(),
                        value: b"4".to_vec(),
                    },
                ],
                ..WriteRequest::default()
            }),
        ),
        request(11, get("d")),
    ];
    let answers: Vec<_> = pipeline_all(&mut kv, requests).await;
    let sequences: Vec<u64> = answers.iter().map(|a| a.sequence).collect();
    assert_eq!(sequences, (0..12).collect::<Vec<_>>(), "{answers:?}");
    let codes: Vec<Code> = answers.iter().map(|a| Code::from(a.code)).collect();
    assert_eq!(
        codes,
        vec![
            Code::Ok,
            Code::Ok,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::Ok,
            Code::Ok,
            Code::Unavailable,
            Code::Ok,
            Code::Ok,
            Code::Ok,
            Code::Ok,
        ],
        "{answers:?}"
    );
    assert!(
        answers[2].message.contains("operations[0].kind 99"),
        "{answers:?}"
    );
    assert!(answers[3].message.contains("no operation"), "{answers:?}");
    assert!(answers[4].answer.is_none());
    let value = |i: usize| match &answers[i].answer {
        Some(pipeline_response::Answer::Get(get)) => get.found.then(|| get.value.clone()),
        other => panic!("answer {i} is not a get: {other:?}"),
    };
    let seq = |i: usize| match &answers[i].answer {
        Some(pipeline_response::Answer::Write(write)) => write.seq,
        other => panic!("answer {i} is not a write: {other:?}"),
    };
    // Each request sees the ones before it on the stream.
    assert_eq!(value(1), Some(b"1".to_vec()));
    assert_eq!(value(6), Some(b"2".to_vec()));
    assert_eq!(value(9), None);
    assert_eq!(value(11), Some(b"4".to_vec()));
    assert!(seq(0) < seq(5) && seq(5) < seq(8) && seq(8) < seq(10));
    assert_eq!(seq(10), seq(8) + 2, "a batch of two takes two numbers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_back_only_its_own_stream() {
    /// More requests than any window could hold: a node that read ahead
    /// without bound would take all of them.
    const OFFERED: u64 = 2_000_000;
    /// What the windows on the way can hold at most: the node's stream
    /// window (256 KiB of ~30-byte requests) and send buffer (400 KiB of
    /// 8 KiB answers), the client's send buffer (1 MiB) and stream window
    /// (2 MiB of answers), with room to spare.
    const BOUND: u64 = 200_000;

    let dir = tempfile::tempdir().unwrap();
    let primary = primary(dir.path()).await;
    let channel = tonic::transport::Endpoint::from_shared(primary.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut kv = KvClient::new(channel.clone());
    kv.put(PutRequest {
        key: b"big".to_vec(),
        value: vec![7u8; 8 << 10],
        sync: false,
    })
    .await
    .unwrap();

    // Stream A: gets of an 8 KiB value, offered as fast as the transport
    // takes them, answers never read.
    let pulled = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let requests = {
        let pulled = Arc::clone(&pulled);
        let stop = Arc::clone(&stop);
        tokio_stream::iter(0..OFFERED)
            .take_while(move |_| !stop.load(Ordering::Relaxed))
            .map(move |i| {
                pulled.fetch_add(1, Ordering::Relaxed);
                request(i, get("big"))
            })
    };
    let mut stuck = KvClient::new(channel.clone())
        .pipeline(requests)
        .await
        .unwrap()
        .into_inner();

    // Wait until the transport stops taking A's requests.
    let mut last = u64::MAX;
    let mut unchanged = 0;
    while unchanged < 10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = pulled.load(Ordering::Relaxed);
        assert!(
            now < BOUND,
            "{now} requests taken from a stream whose answers nobody reads"
        );
        if now == last {
            unchanged += 1;
        } else {
            unchanged = 0;
            last = now;
        }
    }
    assert!(last > 0, "the stream was never read");
    eprintln!("the transport took {last} requests of the stream nobody reads, then stopped");

    // Another stream and a unary call on the same connection are served.
    let other: Vec<_> = KvClient::new(channel.clone())
        .pipeline(tokio_stream::iter((0..100).map(|i| request(i, get("big")))))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(other.len(), 100);
    assert!(other.iter().all(|a| a.code == Code::Ok as i32));
    let unary = kv
        .get(GetRequest {
            key: b"big".to_vec(),
            ..GetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unary.value.len(), 8 << 10);
    assert!(
        pulled.load(Ordering::Relaxed) < BOUND,
        "A was read ahead while the others were served"
    );

    // A's reader comes back: every request it offered is answered, in order.
    stop.store(true, Ordering::Relaxed);
    let mut expected = 0;
    while let Some(answer) = stuck.message().await.unwrap() {
        assert_eq!(answer.sequence, expected);
        assert_eq!(answer.code, Code::Ok as i32, "{}", answer.message);
        expected += 1;
    }
    assert_eq!(expected, pulled.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_waiting_for_a_commit_token_hold_up_no_other_read() {
    /// More waiting reads than the node has runtime threads.
    const WAITING: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let ports = ports();
    let primary = started(dir.path(), "primary", &ports).await;
    let replica = started(dir.path(), "replica-1", &ports).await;
    let mut writer = KvClient::connect(primary.grpc.clone()).await.unwrap();
    let token = writer
        .put(PutRequest {
            key: b"k".to_vec(),
            value: b"first".to_vec(),
            sync: true,
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    let mut reader = KvClient::connect(replica.grpc.clone()).await.unwrap();
    let read = |min_seq: u64| GetRequest {
        key: b"k".to_vec(),
        min_seq,
        timeout_millis: 60_000,
        ..GetRequest::default()
    };
    // The replica has the first write.
    let first = reader.get(read(token)).await.unwrap().into_inner();
    assert_eq!(first.value, b"first");

    // Reads of a token the primary has not handed out yet: they wait.
    let waiting: Vec<_> = (0..WAITING)
        .map(|_| {
            let mut reader = reader.clone();
            let request = read(token + 1);
            tokio::spawn(async move { reader.get(request).await })
        })
        .collect();
    // Meanwhile other reads, unary and pipelined, are answered.
    for _ in 0..100 {
        let answer = reader.get(read(0)).await.unwrap().into_inner();
        assert_eq!(answer.value, b"first");
    }
    let pipelined: Vec<_> = pipeline_all(&mut reader, (0..100).map(|i| request(i, get("k")))).await;
    assert!(pipelined.iter().all(|a| a.code == Code::Ok as i32));
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a waiting read was answered before its token was written"
    );

    // The token's write releases them, with it.
    let second = writer
        .put(PutRequest {
            key: b"k".to_vec(),
            value: b"second".to_vec(),
            sync: false,
        })
        .await
        .unwrap()
        .into_inner()
        .seq;
    assert_eq!(second, token + 1);
    for read in waiting {
        let answer = read.await.unwrap().unwrap().into_inner();
        assert_eq!(answer.value, b"second");
        assert!(answer.seq > token);
    }
}

fn write_of(operations: Vec<Operation>) -> pipeline_request::Operation {
    pipeline_request::Operation::Write(WriteRequest {
        operations,
        ..WriteRequest::default()
    })
}

fn op(kind: operation::Kind, key: &str, value: &str) -> Operation {
    Operation {
        kind: kind as i32,
        key: key.into(),
        value: value.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_writes_keep_their_own_commit_tokens_and_a_refused_one_only_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let primary = primary(dir.path()).await;
    let mut kv = KvClient::connect(primary.grpc.clone()).await.unwrap();
    // Sent at once, so the node can commit the run of writes together; the
    // answers must not depend on whether it did.
    let requests = vec![
        request(0, put("a1", b"1")),
        request(1, put("a2", b"2")),
        request(
            2,
            write_of(vec![
                op(operation::Kind::Put, "a3", "3"),
                op(operation::Kind::Put, "a4", "4"),
            ]),
        ),
        // Refused by the engine (a range that ends before it starts).
        request(
            3,
            write_of(vec![op(operation::Kind::DeleteRange, "b", "a")]),
        ),
        request(
            4,
            pipeline_request::Operation::Delete(DeleteRequest {
                key: b"a1".to_vec(),
                sync: false,
            }),
        ),
        request(5, put("a5", b"5")),
        request(6, get("a1")),
        request(7, get("a4")),
        request(8, get("a5")),
    ];
    let answers: Vec<_> = pipeline_all(&mut kv, requests).await;
    let codes: Vec<Code> = answers.iter().map(|a| Code::from(a.code)).collect();
    let mut expected = vec![Code::Ok; 9];
    expected[3] = Code::InvalidArgument;
    assert_eq!(codes, expected, "{answers:?}");
    assert!(answers[3].message.contains("delete_range"), "{answers:?}");
    let seq = |i: usize| match &answers[i].answer {
        Some(pipeline_response::Answer::Write(write)) => write.seq,
        other => panic!("answer {i} is not a write: {other:?}"),
    };
    // One number per operation, in request order, none for the refused one.
    let first = seq(0);
    assert_eq!(
        [seq(1), seq(2), seq(4), seq(5)],
        [first + 1, first + 3, first + 4, first + 5]
    );
    let found = |i: usize| match &answers[i].answer {
        Some(pipeline_response::Answer::Get(get)) => get.found.then(|| get.value.clone()),
        other => panic!("answer {i} is not a get: {other:?}"),
    };
    assert_eq!(found(6), None, "deleted by request 4");
    assert_eq!(found(7), Some(b"4".to_vec()));
    assert_eq!(found(8), Some(b"5".to_vec()));
    // A token names what it covers: a write's own token reads it.
    let at_token = kv
        .get(GetRequest {
            key: b"a3".to_vec(),
            min_seq: seq(2),
            ..GetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(at_token.value, b"3");
    assert!(at_token.seq >= seq(5));

    // The same without a refused request: the run can share one engine write.
    let requests = vec![
        request(0, put("b1", b"1")),
        request(1, put("b2", b"2")),
        request(
            2,
            write_of(vec![
                op(operation::Kind::Put, "b3", "3"),
                op(operation::Kind::Put, "b4", "4"),
            ]),
        ),
        request(3, put("b5", b"5")),
    ];
    let answers: Vec<_> = pipeline_all(&mut kv, requests).await;
    assert!(
        answers.iter().all(|a| a.code == Code::Ok as i32),
        "{answers:?}"
    );
    let seq = |i: usize| match &answers[i].answer {
        Some(pipeline_response::Answer::Write(write)) => write.seq,
        other => panic!("answer {i} is not a write: {other:?}"),
    };
    let first = seq(0);
    assert_eq!([seq(1), seq(2), seq(3)], [first + 1, first + 3, first + 4]);
}
