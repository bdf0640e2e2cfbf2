//! The shared queue: on a store several instances share, a job of a kind
//! that runs in-process waits in the store, and each instance takes the
//! oldest queued job of a kind it runs whenever one of its running slots
//! is free (CONTRACT.md, "Several instances"). An instance wakes when the
//! store reports a newly queued job, and looks again every second in case a
//! report was lost.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Registry;

/// How often an instance with a free slot looks at the shared queue
/// without being told of a new job.
const QUEUE_LOOK_INTERVAL: Duration = Duration::from_secs(1);

impl Registry {
    /// Takes and runs jobs of the shared queue, one per free running slot,
    /// until shutdown.
    pub(super) async fn take_from_shared_queue(self) {
        let kinds: Vec<Arc<str>> = self
            .inner
            .kinds
            .values()
            .filter(|kind| !kind.is_external())
            .map(|kind| kind.shared_name())
            .collect();
        let changed = self.inner.store.queue_changed();
        let shutdown = self.inner.shutdown.clone();
        loop {
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return,
                slot = self.inner.running_slots.clone().acquire_owned() => {
                    slot.expect("the running-slot semaphore is never closed")
                }
            };
            self.inner.slot_awaits_shared_job.store(true, Ordering::Release);
            loop {
                if let Some(job) = self.inner.store.take_queued(&kinds).await {
                    self.inner.slot_awaits_shared_job.store(false, Ordering::Release);
                    self.run_stored(&job, None, Some(slot)).await;
                    // A cancel relayed while the job was being taken found
                    // no instance running it; it was kept for this look.
                    if let Some(request) = self.inner.store.cancel_asked(job.job_id).await {
                        self.cancel_if_running_here(request);
                    }
                    break;
                }
                // The store keeps a report made meanwhile (`notify_one`).
                let told = async {
                    match &changed {
                        Some(changed) => changed.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    () = told => {}
                    () = tokio::time::sleep(QUEUE_LOOK_INTERVAL) => {}
                }
            }
        }
    }
}
