//! Kv requests turned into engine writes: a put or delete as the
//! one-operation write it is, and a write's operations checked and added
//! to a batch (all or none). Pure conversions, shared by the unary calls
//! and the pipelined stream.

use strata::WriteBatch;
use strata_proto::v1::{DeleteRequest, Operation, PutRequest, WriteRequest, operation};
use tonic::Status;

/// Checks `operations` (at least one, each of a known kind), then adds
/// them to `batch`; on an error, adds none.
pub(crate) fn add_operations(
    batch: &mut WriteBatch,
    operations: &[Operation],
) -> Result<(), Status> {
    if operations.is_empty() {
        return Err(Status::invalid_argument(
            "a write needs at least one operation",
        ));
    }
    for (i, op) in operations.iter().enumerate() {
        if !matches!(
            operation::Kind::try_from(op.kind),
            Ok(operation::Kind::Put | operation::Kind::Delete | operation::Kind::DeleteRange)
        ) {
            return Err(Status::invalid_argument(format!(
                "operations[{i}].kind {} is not put, delete or delete_range",
                op.kind
            )));
        }
    }
    for op in operations {
        match operation::Kind::try_from(op.kind) {
            Ok(operation::Kind::Put) => batch.put(&op.key, &op.value),
            Ok(operation::Kind::Delete) => batch.delete(&op.key),
            _ => batch.delete_range(&op.key, &op.value),
        }
    }
    Ok(())
}

/// A put as the one-operation write it is.
pub(crate) fn put_to_write(put: PutRequest) -> WriteRequest {
    WriteRequest {
        operations: vec![Operation {
            kind: operation::Kind::Put as i32,
            key: put.key,
            value: put.value,
        }],
        sync: put.sync,
        ..WriteRequest::default()
    }
}

/// A delete as the one-operation write it is.
pub(crate) fn delete_to_write(delete: DeleteRequest) -> WriteRequest {
    WriteRequest {
        operations: vec![Operation {
            kind: operation::Kind::Delete as i32,
            key: delete.key,
            value: Vec::new(),
        }],
        sync: delete.sync,
        ..WriteRequest::default()
    }
}
