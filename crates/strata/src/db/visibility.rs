//! Visibility: a sequence number becomes readable only when it and every
//! number below it have been applied to the memtables.
//!
//! Writers of one commit group leave the log together and apply their
//! batches concurrently, in any order. Each reports its applied range here;
//! the visible sequence number advances over the contiguous prefix of
//! applied ranges. So a reader at sequence `s` sees every batch up to `s`
//! whole, and a batch never becomes visible before an earlier one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};

#[derive(Debug)]
pub(crate) struct Visibility {
    visible: AtomicU64,
    pending: Mutex<BTreeMap<u64, u64>>,
    advanced: Condvar,
}

impl Visibility {
    /// Everything up to and including `visible` is applied.
    pub(crate) fn new(visible: u64) -> Self {
        Self {
            visible: AtomicU64::new(visible),
            pending: Mutex::new(BTreeMap::new()),
            advanced: Condvar::new(),
        }
    }

    /// The highest sequence number a reader may see.
    pub(crate) fn visible(&self) -> u64 {
        self.visible.load(Ordering::Acquire)
    }

    /// Waits until `seq` is visible, up to `timeout`; returns whether it is.
    pub(crate) fn wait_visible(&self, seq: u64, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut pending = self.pending.lock();
        while self.visible.load(Ordering::Acquire) < seq {
            if self.advanced.wait_until(&mut pending, deadline).timed_out() {
                return self.visible.load(Ordering::Acquire) >= seq;
            }
        }
        true
    }

    /// Records that `first..=last` is applied, and waits until it is
    /// visible (all earlier ranges applied too).
    pub(crate) fn publish_and_wait(&self, first: u64, last: u64) {
        let mut pending = self.pending.lock();
        pending.insert(first, last);
        let mut visible = self.visible.load(Ordering::Acquire);
        while let Some((&start, &end)) = pending.first_key_value() {
            if start != visible + 1 {
                break;
            }
            visible = end;
            pending.pop_first();
        }
        if visible != self.visible.load(Ordering::Acquire) {
            self.visible.store(visible, Ordering::Release);
            self.advanced.notify_all();
        }
        while self.visible.load(Ordering::Acquire) < last {
            self.advanced.wait(&mut pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn out_of_order_applies_become_visible_in_order() {
        let v = Arc::new(Visibility::new(0));
        let late = {
            let v = Arc::clone(&v);
            std::thread::spawn(move || v.publish_and_wait(3, 5))
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(v.visible(), 0, "3..=5 must wait for 1..=2");
        v.publish_and_wait(1, 2);
        late.join().ok();
        assert_eq!(v.visible(), 5);
    }
}
