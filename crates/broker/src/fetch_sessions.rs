//! Fetch sessions (KIP-227): a consumer with many partitions sends its whole list once;
//! later requests carry only the partitions whose fetch position changed (and the ones to
//! forget), and responses only the partitions with something new: records, an error, or a
//! changed high watermark, last stable offset or log start offset.
//!
//! The cache holds at most `max.incremental.fetch.session.cache.slots` sessions. A new
//! session takes a free slot, else evicts the least recently used session idle for longer
//! than [`EVICTION_MS`], else the smallest session if the new one has more partitions (the
//! bigger a session, the more it saves); otherwise the fetch is answered without a session
//! (session id 0) and the client goes on with full fetches, as Kafka's cache does.
//!
//! Time comes from the broker's injected clock. Depends on the metadata-free types only: the
//! handler resolves topics and reads partitions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_log::Clock;
use uuid::Uuid;

/// A session idle this long may be evicted by a new one (Kafka's
/// `min.incremental.fetch.session.eviction.ms`).
pub const EVICTION_MS: i64 = 120_000;
/// The epoch of a request that opens a session (full fetch).
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a request that closes its session, or wants none (full fetch).
pub const FINAL_EPOCH: i32 = -1;

/// One partition of a session: where the client fetches from, and what the last response
/// said about it (an incremental response leaves out partitions where nothing changed).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPartition {
    /// Shared: a session's partitions are copied out for every request.
    pub topic: Arc<str>,
    pub topic_id: Uuid,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// The leader epoch the client believes current (-1: none), checked on every read.
    pub current_leader_epoch: i32,
    /// The epoch of the last record the client fetched (-1: none); a log that diverged from
    /// it is reported instead of read (v12+).
    pub last_fetched_epoch: i32,
    /// High watermark, last stable offset and log start offset last sent; -2 when nothing
    /// was sent yet (no partition reports -2).
    pub sent: (i64, i64, i64),
}

/// Nothing sent yet.
pub const NOT_SENT: (i64, i64, i64) = (-2, -2, -2);

#[derive(Debug)]
struct Session {
    /// The epoch the next request must carry.
    next_epoch: i32,
    /// In fetch order: a partition that returned records moves to the end, so that one busy
    /// partition cannot take every response's budget.
    partitions: Vec<SessionPartition>,
    last_used_ms: i64,
}

/// Why an incremental fetch cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// FETCH_SESSION_ID_NOT_FOUND: evicted, or never existed.
    NotFound,
    /// INVALID_FETCH_SESSION_EPOCH.
    InvalidEpoch,
}

/// The partition a request names: by topic name (v12 and older) or by topic ID (v13+).
pub type PartitionKey<'a> = (&'a str, Uuid, i32);

/// Changes an incremental request makes to its session.
#[derive(Debug, Default)]
pub struct Changes {
    /// Partitions added, or whose fetch offset or size changed.
    pub upserts: Vec<SessionPartition>,
    /// Partitions to drop: (topic name, topic id, partition); the name is empty for v13+.
    pub forgotten: Vec<(String, Uuid, i32)>,
    /// The request names topics by ID (v13+).
    pub by_id: bool,
}

#[derive(Debug)]
pub struct FetchSessionCache {
    slots: usize,
    clock: Arc<dyn Clock>,
    sessions: Mutex<HashMap<i32, Session>>,
    /// Sessions opened and evicted since start (for metrics).
    opened: AtomicU64,
    evicted: AtomicU64,
}

impl FetchSessionCache {
    pub fn new(slots: usize, clock: Arc<dyn Clock>) -> Self {
        FetchSessionCache {
            slots,
            clock,
            sessions: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// Sessions opened since start.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Sessions evicted to make room for new ones since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes a session (a request with epoch 0 or -1 names the one it replaces or ends).
    pub fn close(&self, id: i32) {
        self.lock().remove(&id);
    }

    /// Applies an incremental request with `epoch` to session `id`: returns the session's
    /// partitions, in fetch order, once the changes are applied, and advances the epoch.
    pub fn update(
        &self,
        id: i32,
        epoch: i32,
        changes: Changes,
    ) -> Result<Vec<SessionPartition>, SessionError> {
        let now = self.clock.now_ms();
        let mut sessions = self.lock();
        let session = sessions.get_mut(&id).ok_or(SessionError::NotFound)?;
        if epoch != session.next_epoch {
            return Err(SessionError::InvalidEpoch);
        }
        session.next_epoch = next_epoch(epoch);
        session.last_used_ms = now;
        for (topic, topic_id, partition) in &changes.forgotten {
            session
                .partitions
                .retain(|p| !same_partition(p, (topic, *topic_id, *partition)));
        }
        for upsert in changes.upserts {
            let key = (
                if changes.by_id { "" } else { &*upsert.topic },
                upsert.topic_id,
                upsert.partition,
            );
            match session
                .partitions
                .iter_mut()
                .find(|p| same_partition(p, key))
            {
                Some(existing) => {
                    existing.fetch_offset = upsert.fetch_offset;
                    existing.max_bytes = upsert.max_bytes;
                    existing.current_leader_epoch = upsert.current_leader_epoch;
                    existing.last_fetched_epoch = upsert.last_fetched_epoch;
                }
                None => session.partitions.push(upsert),
            }
        }
        assert_unique(&session.partitions);
        Ok(session.partitions.clone())
    }

    /// Opens a session holding `partitions` (what a full fetch just returned, `sent` filled
    /// in). A partition the request listed twice is kept once. Returns its id, or 0 when no
    /// slot could be had.
    pub fn open(&self, mut partitions: Vec<SessionPartition>) -> i32 {
        if self.slots == 0 {
            return 0;
        }
        let mut seen = std::collections::HashSet::new();
        partitions.retain(|p| seen.insert((p.topic.clone(), p.topic_id, p.partition)));
        assert_unique(&partitions);
        let now = self.clock.now_ms();
        let mut sessions = self.lock();
        if sessions.len() >= self.slots {
            let stale = sessions
                .iter()
                .filter(|(_, s)| now - s.last_used_ms > EVICTION_MS)
                .min_by_key(|(_, s)| s.last_used_ms)
                .map(|(id, _)| *id);
            let smaller = || {
                sessions
                    .iter()
                    .filter(|(_, s)| s.partitions.len() < partitions.len())
                    .min_by_key(|(_, s)| (s.partitions.len(), s.last_used_ms))
                    .map(|(id, _)| *id)
            };
            match stale.or_else(smaller) {
                Some(victim) => {
                    sessions.remove(&victim);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                None => return 0,
            }
        }
        let id = loop {
            let candidate = (Uuid::new_v4().as_u128() as u32 & 0x7fff_ffff) as i32;
            if candidate != 0 && !sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        sessions.insert(
            id,
            Session {
                next_epoch: next_epoch(INITIAL_EPOCH),
                partitions,
                last_used_ms: now,
            },
        );
        assert!(
            sessions.len() <= self.slots,
            "the cache holds at most its slots"
        );
        self.opened.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// After a response: records what it told the client about each partition, and moves
    /// the partitions that returned records to the end of the fetch order.
    pub fn record_sent(&self, id: i32, sent: &[(PartitionKey<'_>, (i64, i64, i64), bool)]) {
        let mut sessions = self.lock();
        let Some(session) = sessions.get_mut(&id) else {
            return;
        };
        let mut moved = Vec::new();
        for (key, values, had_records) in sent {
            if let Some(index) = session
                .partitions
                .iter()
                .position(|p| same_partition(p, *key))
            {
                session.partitions[index].sent = *values;
                if *had_records {
                    moved.push(index);
                }
            }
        }
        moved.sort_unstable();
        for (removed, index) in moved.into_iter().enumerate() {
            let partition = session.partitions.remove(index - removed);
            session.partitions.push(partition);
        }
        assert_unique(&session.partitions);
    }
}

/// Epochs count up from 1 and wrap past `i32::MAX` to 1 (0 and -1 have their own meaning).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

/// A request names a partition by topic name (v12 and older) or by topic ID (v13+, name
/// empty).
fn same_partition(p: &SessionPartition, (topic, topic_id, partition): PartitionKey<'_>) -> bool {
    p.partition == partition
        && if topic.is_empty() {
            p.topic_id == topic_id
        } else {
            &*p.topic == topic
        }
}

fn assert_unique(partitions: &[SessionPartition]) {
    if cfg!(debug_assertions) {
        let mut seen = std::collections::HashSet::new();
        for p in partitions {
            assert!(
                seen.insert((&*p.topic, p.topic_id, p.partition)),
                "a session holds {}-{} once",
                p.topic,
                p.partition
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_log::ManualClock;

    fn partition(topic: &str, partition: i32) -> SessionPartition {
        SessionPartition {
            topic: topic.into(),
            topic_id: Uuid::nil(),
            partition,
            fetch_offset: 0,
            max_bytes: 1000,
            current_leader_epoch: -1,
            last_fetched_epoch: -1,
            sent: NOT_SENT,
        }
    }

    #[test]
    fn epochs_must_follow_each_other() {
        let clock = Arc::new(ManualClock::new(0));
        let cache = FetchSessionCache::new(10, clock);
        let id = cache.open(vec![partition("a", 0)]);
        assert_ne!(id, 0);
        assert!(cache.update(id, 1, Changes::default()).is_ok());
        assert_eq!(
            cache.update(id, 1, Changes::default()),
            Err(SessionError::InvalidEpoch)
        );
        assert!(cache.update(id, 2, Changes::default()).is_ok());
        assert_eq!(
            cache.update(id + 1, 3, Changes::default()),
            Err(SessionError::NotFound)
        );
        cache.close(id);
        assert_eq!(
            cache.update(id, 3, Changes::default()),
            Err(SessionError::NotFound)
        );
    }

    #[test]
    fn changes_add_update_and_forget_partitions() {
        let clock = Arc::new(ManualClock::new(0));
        let cache = FetchSessionCache::new(10, clock);
        let id = cache.open(vec![partition("a", 0), partition("a", 1)]);
        let mut moved = partition("a", 1);
        moved.fetch_offset = 42;
        let changes = Changes {
            upserts: vec![moved, partition("b", 0)],
            forgotten: vec![("a".into(), Uuid::nil(), 0)],
            by_id: false,
        };
        let now = cache.update(id, 1, changes).unwrap();
        let listed: Vec<(&str, i32, i64)> = now
            .iter()
            .map(|p| (&*p.topic, p.partition, p.fetch_offset))
            .collect();
        assert_eq!(listed, [("a", 1, 42), ("b", 0, 0)]);
    }

    #[test]
    fn partitions_that_returned_records_go_to_the_end() {
        let clock = Arc::new(ManualClock::new(0));
        let cache = FetchSessionCache::new(10, clock);
        let id = cache.open(vec![
            partition("a", 0),
            partition("a", 1),
            partition("a", 2),
        ]);
        cache.record_sent(
            id,
            &[
                (("a", Uuid::nil(), 0), (5, 5, 0), true),
                (("a", Uuid::nil(), 1), (0, 0, 0), false),
                (("a", Uuid::nil(), 2), (3, 3, 0), true),
            ],
        );
        let order: Vec<(i32, (i64, i64, i64))> = cache
            .update(id, 1, Changes::default())
            .unwrap()
            .iter()
            .map(|p| (p.partition, p.sent))
            .collect();
        assert_eq!(order, [(1, (0, 0, 0)), (0, (5, 5, 0)), (2, (3, 3, 0))]);
    }

    #[test]
    fn a_full_cache_evicts_stale_then_smaller_sessions_else_refuses() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let cache = FetchSessionCache::new(2, clock.clone());
        let small = cache.open(vec![partition("a", 0)]);
        let big = cache.open(vec![
            partition("a", 0),
            partition("a", 1),
            partition("a", 2),
        ]);
        // Not stale, and no smaller session than one partition: refused.
        assert_eq!(cache.open(vec![partition("b", 0)]), 0);
        // A bigger session evicts the smallest.
        let two = cache.open(vec![partition("b", 0), partition("b", 1)]);
        assert_ne!(two, 0);
        assert_eq!(
            cache.update(small, 1, Changes::default()),
            Err(SessionError::NotFound)
        );
        // Once idle past the eviction time, even a bigger session gives way to a small one.
        clock.advance(EVICTION_MS + 1);
        assert!(cache.update(two, 1, Changes::default()).is_ok());
        let one = cache.open(vec![partition("c", 0)]);
        assert_ne!(one, 0);
        assert_eq!(
            cache.update(big, 1, Changes::default()),
            Err(SessionError::NotFound),
            "the stale one went"
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_partition_listed_twice_is_kept_once() {
        let cache = FetchSessionCache::new(10, Arc::new(ManualClock::new(0)));
        let id = cache.open(vec![
            partition("a", 0),
            partition("a", 0),
            partition("a", 1),
        ]);
        let kept = cache.update(id, 1, Changes::default()).unwrap();
        assert_eq!(kept.len(), 2);
    }

    #[test]
    fn no_slots_means_no_sessions() {
        let cache = FetchSessionCache::new(0, Arc::new(ManualClock::new(0)));
        assert_eq!(cache.open(vec![partition("a", 0)]), 0);
        assert!(cache.is_empty());
    }
}
