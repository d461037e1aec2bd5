//! `Kv.Pipeline`: a stream of requests answered in order, as Redis clients
//! pipeline commands.
//!
//! One task per stream takes the requests that have arrived (at most
//! [`CHUNK_MAX`] at once), answers them in order and hands the answers to
//! the transport through a channel of [`ANSWERS_MAX`]. A run of writes
//! that wait for no replica is committed as one engine write (one trip
//! through group commit instead of one per request); each request still
//! gets its own commit token, the sequence number of its own last
//! operation, because a batch of n operations takes n consecutive numbers.
//! If the engine refuses such a merged write for its content (a key over
//! the limit, say), the run's requests are written one by one, so only the
//! one at fault is refused.
//!
//! Invariants:
//! - Answers leave in request order, one per request, each carrying its
//!   request's `sequence`; a refused request is answered with its status
//!   and the next one is served.
//! - A request sees every earlier request of its stream applied.
//! - A stream holds at most `CHUNK_MAX` requests and `ANSWERS_MAX` answers
//!   beyond the HTTP/2 windows: the task reads on only once the transport
//!   took the answers before, so a client that stops reading stops its own
//!   stream and no other.
//! - After a reload of the credentials, a stream whose credential no longer
//!   grants it is ended (PERMISSION_DENIED) before its next request is
//!   answered, as replication streams are.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use strata::WriteBatch;
use strata_proto::v1::{
    PipelineRequest, PipelineResponse, WriteRequest, pipeline_request, pipeline_response,
};
use strata_replication::auth::Principal;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::node::Node;
use crate::requests::{add_operations, delete_to_write, put_to_write};

/// Requests taken from a stream at once.
pub(crate) const CHUNK_MAX: usize = 64;
/// Answers a stream holds ready for the transport.
pub(crate) const ANSWERS_MAX: usize = 64;
/// The most encoded operation bytes merged into one engine write.
const MERGED_BYTES_MAX: usize = 1 << 20;

/// The answers to `requests`, in order, as the module says. A request that
/// cannot be decoded ends the stream with its status (what follows it
/// cannot be told apart).
pub(crate) fn serve<S>(
    node: Node,
    principal: Principal,
    requests: S,
) -> tokio_stream::wrappers::ReceiverStream<Result<PipelineResponse, Status>>
where
    S: Stream<Item = Result<PipelineRequest, Status>> + Send + 'static,
{
    let (answers, receiver) = tokio::sync::mpsc::channel(ANSWERS_MAX);
    tokio::spawn(async move {
        let mut requests = Box::pin(requests);
        let mut auth_generation = node.auth.generation();
        loop {
            let mut chunk = VecDeque::new();
            let mut end = None;
            match requests.next().await {
                Some(Ok(request)) => chunk.push_back(request),
                Some(Err(status)) => {
                    let _ = answers.send(Err(status)).await;
                    return;
                }
                None => return,
            }
            while chunk.len() < CHUNK_MAX {
                match next_ready(&mut requests).await {
                    Some(Some(Ok(request))) => chunk.push_back(request),
                    Some(Some(Err(status))) => {
                        end = Some(Err(status));
                        break;
                    }
                    Some(None) => {
                        end = Some(Ok(()));
                        break;
                    }
                    None => break,
                }
            }
            let generation = node.auth.generation();
            if generation != auth_generation {
                auth_generation = generation;
                if !node.auth.still_grants(&principal) {
                    tracing::warn!(
                        credential = %principal.name,
                        "credential revoked: ending a pipelined stream"
                    );
                    let _ = answers
                        .send(Err(Status::permission_denied(
                            "the credential this stream was opened with was revoked or changed",
                        )))
                        .await;
                    return;
                }
            }
            if answer_chunk(&node, chunk, &answers).await.is_err() {
                return; // The client is gone.
            }
            match end {
                Some(Err(status)) => {
                    let _ = answers.send(Err(status)).await;
                    return;
                }
                Some(Ok(())) => return,
                None => {}
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// The next item of `stream` if it has one ready now: `None` if it would
/// wait, `Some(None)` at its end.
async fn next_ready<S: Stream + ?Sized>(stream: &mut Pin<Box<S>>) -> Option<Option<S::Item>> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match stream.as_mut().poll_next(cx) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        })
    })
    .await
}

type Answers = tokio::sync::mpsc::Sender<Result<PipelineResponse, Status>>;

/// A write that can share an engine write with its neighbours: no replica
/// to wait for, operations checked.
struct Mergeable {
    sequence: u64,
    request: WriteRequest,
}

fn mergeable(request: PipelineRequest) -> Result<Mergeable, PipelineRequest> {
    let write = match request.operation {
        Some(pipeline_request::Operation::Put(put)) => put_to_write(put),
        Some(pipeline_request::Operation::Delete(delete)) => delete_to_write(delete),
        Some(pipeline_request::Operation::Write(write)) if write.min_replicas == 0 => write,
        operation => {
            return Err(PipelineRequest {
                sequence: request.sequence,
                operation,
            });
        }
    };
    Ok(Mergeable {
        sequence: request.sequence,
        request: write,
    })
}

/// Answers `chunk` in order into `answers`; `Err` if the client is gone.
async fn answer_chunk(
    node: &Node,
    mut chunk: VecDeque<PipelineRequest>,
    answers: &Answers,
) -> Result<(), ()> {
    while let Some(request) = chunk.pop_front() {
        let first = match mergeable(request) {
            Ok(write) => write,
            Err(other) => {
                let answer = node.answer_pipelined(other).await;
                answers.send(Ok(answer)).await.map_err(drop)?;
                continue;
            }
        };
        let mut run = vec![first];
        let mut bytes: usize = run.iter().map(|w| operation_bytes(&w.request)).sum();
        while bytes < MERGED_BYTES_MAX
            && let Some(next) = chunk.pop_front()
        {
            match mergeable(next) {
                Ok(write) => {
                    bytes += operation_bytes(&write.request);
                    run.push(write);
                }
                Err(other) => {
                    chunk.push_front(other);
                    break;
                }
            }
        }
        for answer in write_run(node, run).await {
            answers.send(Ok(answer)).await.map_err(drop)?;
        }
    }
    Ok(())
}

fn operation_bytes(request: &WriteRequest) -> usize {
    request
        .operations
        .iter()
        .map(|op| op.key.len() + op.value.len() + 8)
        .sum()
}

/// The primary a "not primary" refusal names (from its metadata).
fn not_primary(status: &Status) -> Option<strata_proto::v1::NotPrimary> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    let metadata = status.metadata();
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let epoch = text(crate::member::EPOCH_KEY)?.parse().ok()?;
    Some(strata_proto::v1::NotPrimary {
        node: text(crate::member::PRIMARY_NODE_KEY).unwrap_or_default(),
        address: text(crate::member::PRIMARY_ADDRESS_KEY).unwrap_or_default(),
        epoch,
    })
}

/// The answer to request `sequence`.
pub(crate) fn answered(
    sequence: u64,
    outcome: Result<pipeline_response::Answer, Status>,
) -> PipelineResponse {
    match outcome {
        Ok(answer) => PipelineResponse {
            sequence,
            code: tonic::Code::Ok as i32,
            message: String::new(),
            answer: Some(answer),
            not_primary: None,
        },
        Err(status) => PipelineResponse {
            sequence,
            code: status.code() as i32,
            message: status.message().to_string(),
            answer: None,
            not_primary: not_primary(&status),
        },
    }
}

/// Commits a run of writes, as one engine write where it can; their answers
/// in order.
async fn write_run(node: &Node, run: Vec<Mergeable>) -> Vec<PipelineResponse> {
    let started = Instant::now();
    // Requests refused on their own (no operation, an unknown kind) are
    // answered as such; the rest share one batch.
    let mut batch = WriteBatch::new();
    let mut sync = false;
    let mut outcomes: Vec<Option<Result<u64, Status>>> = Vec::with_capacity(run.len());
    let mut in_batch = 0usize;
    // On a sharded member, each request's keys are checked on their own
    // first (a request for another group is refused alone), then again,
    // all together, under the ownership gate.
    let sharded = node.sharded().cloned();
    let mut spans = sharded.as_ref().map(|_| Vec::new());
    for write in &run {
        let own = match (&sharded, &mut spans) {
            (Some(ownership), Some(all)) => {
                let mine = crate::ownership::spans_of(&write.request.operations);
                ownership.check(&mine).map(|()| all.extend(mine))
            }
            _ => Ok(()),
        };
        match own.and_then(|()| add_operations(&mut batch, &write.request.operations)) {
            Ok(()) => {
                sync |= write.request.sync;
                in_batch += 1;
                outcomes.push(None);
            }
            Err(status) => outcomes.push(Some(Err(status))),
        }
    }
    // Whether the run's requests must be written one by one: the engine
    // refused their shared write for its content, so which of them is at
    // fault is found by writing each alone.
    let mut one_by_one = false;
    if in_batch > 0 {
        match node.commit(batch, spans, sync, 0, 0).await {
            Ok(committed) => {
                // Each request's token: the last sequence number of its own
                // operations, counting back from the batch's last.
                let mut next_last = committed.seq;
                for (write, outcome) in run.iter().zip(outcomes.iter_mut()).rev() {
                    if outcome.is_none() {
                        *outcome = Some(Ok(next_last));
                        next_last = next_last.saturating_sub(write.request.operations.len() as u64);
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument && in_batch > 1 => {
                one_by_one = true;
            }
            Err(status) => {
                for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                    *outcome = Some(Err(status.clone()));
                }
            }
        }
    }
    let mut answers = Vec::with_capacity(run.len());
    for (write, outcome) in run.into_iter().zip(outcomes) {
        let outcome = match outcome {
            Some(outcome) => {
                let ok = outcome.is_ok();
                node.count("write", ok);
                node.metrics
                    .write_seconds
                    .observe(started.elapsed().as_secs_f64());
                outcome.map(|seq| strata_proto::v1::WriteResponse {
                    seq,
                    replicas: 0,
                    confirmed: true,
                    epoch: node.epoch.get(),
                })
            }
            None if one_by_one => node.write_timed(write.request).await,
            None => Err(Status::internal("a merged write lost its answer")),
        };
        answers.push(answered(
            write.sequence,
            outcome.map(pipeline_response::Answer::Write),
        ));
    }
    answers
}
