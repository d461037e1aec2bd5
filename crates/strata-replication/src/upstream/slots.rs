//! Replica slots: one per replica id, holding its stream, its pin on the
//! log (up to `slot_max_bytes`), and what it acknowledged.

use super::*;

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) stream: u64,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) connected: bool,
    pub(super) pin: Option<LogPin>,
    pub(super) durable: u64,
    pub(super) applied: u64,
    pub(super) sent: u64,
    /// (last sequence number, when sent) of records not yet acknowledged.
    pub(super) in_flight: VecDeque<(u64, Instant)>,
    /// A copy's subscription (`Subscribe.transient`): forgotten when its
    /// stream ends, not a replica, never counted for semi-sync.
    pub(super) transient: bool,
}

impl Upstream {
    pub(super) fn on_ack(&self, id: &str, stream: u64, ack: &Ack) -> Result<(), Status> {
        let mut slots = self.shared.slots.lock();
        let Some(slot) = slots.get_mut(id).filter(|s| s.stream == stream) else {
            return Err(Status::cancelled(
                "a newer stream of this replica replaced this one",
            ));
        };
        if ack.applied_seq > slot.sent || ack.durable_seq > slot.sent {
            return Err(Status::invalid_argument(format!(
                "ack of applied {} / durable {} beyond the last record sent ({})",
                ack.applied_seq, ack.durable_seq, slot.sent
            )));
        }
        slot.applied = slot.applied.max(ack.applied_seq);
        slot.durable = slot.durable.max(ack.durable_seq);
        while slot
            .in_flight
            .front()
            .is_some_and(|(last, _)| *last <= slot.applied)
        {
            slot.in_flight.pop_front();
        }
        if let Some(pin) = &slot.pin {
            pin.advance(SeqNo(slot.applied.max(1)))
                .map_err(|e| Status::internal(format!("advancing the slot's pin: {e}")))?;
        }
        drop(slots);
        self.shared.acked.notify_all();
        Ok(())
    }

    pub(super) fn disconnect(&self, id: &str, stream: u64) {
        let mut slots = self.shared.slots.lock();
        if let Some(slot) = slots.get_mut(id).filter(|s| s.stream == stream) {
            slot.connected = false;
            slot.cancel.store(true, Ordering::Release);
            if slot.transient {
                // Its pin goes with it: the log is no longer held for it.
                slots.remove(id);
            }
        }
    }
}
