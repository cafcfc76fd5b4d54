//! Filesystem work that may block for long, and the embedder's say in where it runs.
//!
//! Appends and reads are page-cache copies, fast enough to run anywhere. Some steps are not:
//! rolling a segment (creating files, writing the sealed segment's indexes and a producer
//! snapshot) and opening a segment the file cache closed (loading, perhaps rebuilding, its
//! indexes). A broker that calls the log from an async runtime's worker threads would stall
//! every task queued on that worker meanwhile; [`BlockingSection`] lets it move the work
//! off the worker (the broker uses tokio's `block_in_place`). The log crate itself knows
//! nothing of async runtimes.

use std::fmt;

/// Runs a piece of blocking filesystem work, on the calling thread, after telling whatever
/// schedules that thread.
pub trait BlockingSection: Send + Sync + fmt::Debug {
    /// Runs `work` exactly once before returning.
    fn run(&self, work: &mut dyn FnMut());
}

/// Runs the work inline: for threads that are the log's own or otherwise free to block.
#[derive(Debug, Default, Clone, Copy)]
pub struct Inline;

impl BlockingSection for Inline {
    fn run(&self, work: &mut dyn FnMut()) {
        work();
    }
}

/// Runs `work` in `section` and returns its result.
pub(crate) fn run<R>(section: &dyn BlockingSection, work: impl FnOnce() -> R) -> R {
    let mut work = Some(work);
    let mut output = None;
    section.run(&mut || {
        if let Some(work) = work.take() {
            output = Some(work());
        }
    });
    output.expect("a blocking section runs its work")
}
