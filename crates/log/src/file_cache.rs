//! A bound on the file handles (and loaded indexes) held for inactive segments.
//!
//! A broker with thousands of partitions has far more segments than it can keep open. Only
//! each partition's active segment stays open; the others are opened on first read and kept
//! in a slot of their [`SegmentFiles`] until the CLOCK sweep here closes them. Eviction never
//! takes a partition lock and only `try_lock`s slots, so it cannot deadlock with readers;
//! a reader that already holds an `Arc<OpenSegment>` keeps using it after eviction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::segment::SegmentFiles;
use crate::storage::Storage;

/// Also carries the [`Storage`] that every file of its manager's logs is written through:
/// each segment's files already hold the cache.
#[derive(Debug)]
pub(crate) struct FileCache {
    storage: Arc<dyn Storage>,
    max_open: usize,
    open: AtomicUsize,
    ring: Mutex<VecDeque<Weak<SegmentFiles>>>,
}

impl FileCache {
    pub fn new(max_open: usize, storage: Arc<dyn Storage>) -> Self {
        FileCache {
            storage,
            max_open: max_open.max(1),
            open: AtomicUsize::new(0),
            ring: Mutex::default(),
        }
    }

    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    pub fn shared_storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    /// Number of inactive segments currently open.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Called after `files` filled its slot.
    pub fn opened(&self, files: &Arc<SegmentFiles>) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.push_back(Arc::downgrade(files));
        if self.open.fetch_add(1, Ordering::SeqCst) + 1 > self.max_open {
            self.evict(&mut ring);
        }
        // Segments deleted by retention leave dead entries; drop them before they pile up.
        if ring.len() > 2 * self.max_open + 64 {
            ring.retain(|weak| weak.strong_count() > 0);
        }
    }

    /// Called when a slot is emptied other than by eviction (its segment was dropped).
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }

    fn evict(&self, ring: &mut VecDeque<Weak<SegmentFiles>>) {
        // Each entry gets at most a second chance per sweep.
        let mut budget = ring.len() * 2;
        while self.open.load(Ordering::SeqCst) > self.max_open && budget > 0 {
            budget -= 1;
            let Some(weak) = ring.pop_front() else { break };
            let Some(files) = weak.upgrade() else {
                continue;
            };
            if files.take_referenced() {
                ring.push_back(weak);
                continue;
            }
            match files.try_close() {
                Some(true) => {
                    self.open.fetch_sub(1, Ordering::SeqCst);
                }
                Some(false) => {}
                None => ring.push_back(weak),
            }
        }
    }
}
