//! A partition's replication state on its leader (Kafka's `Partition` ISR bookkeeping):
//! where each follower's log ends, when it last caught up, the ISR as the metadata has it
//! and the change this leader asked for, and from those the high watermark. Pure state
//! and decisions, no I/O: the partition feeds it follower fetches and metadata, applies
//! the high watermark it computes to the log, and sends the ISR changes it asks for to the
//! controller.
//!
//! Invariants (checked by [`ReplicaSet::check`] after every change): the leader is in the
//! ISR; the ISR and a pending ISR are replicas; the high watermark never passes the log
//! end of any replica it counts.

use std::collections::BTreeMap;

/// The leader's answer to a fetch from `fetch_offset` after a record of
/// `last_fetched_epoch`, given its own end offset for that epoch (`end_for_epoch`:
/// OffsetForLeaderEpoch's answer, `None` when it has none): `Some((epoch, end))` when the
/// fetcher's log diverged from the leader's (its last epoch ended earlier at the leader, or
/// never led there), which is where it must truncate (KIP-320).
pub fn diverging(
    end_for_epoch: Option<(i32, i64)>,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<(i32, i64)> {
    let (epoch, end) = end_for_epoch.unwrap_or((-1, -1));
    (epoch < last_fetched_epoch || end < fetch_offset).then_some((epoch, end))
}

/// Whether a follower's fetch position says what it holds, so that its leader may count
/// it (high watermark, ISR): not when it is past the leader's log end, nor when its log
/// diverged (`end_for_epoch`: the leader's end for the follower's last epoch). A diverged
/// follower holds other records below its fetch offset; counting them would commit what it
/// does not have and let it join the ISR. It truncates first, as in Kafka.
pub fn counts_as_progress(
    end_for_epoch: Option<(i32, i64)>,
    last_fetched_epoch: i32,
    fetch_offset: i64,
    leader_end: i64,
) -> bool {
    fetch_offset <= leader_end
        && (last_fetched_epoch < 0
            || diverging(end_for_epoch, last_fetched_epoch, fetch_offset).is_none())
}

/// Where a follower truncates when its leader answered `diverging` (epoch, end offset): to
/// the smaller of the leader's end for that epoch and its own (`own_end_for_epoch`), or to
/// the leader's end when either does not know the epoch.
pub fn truncation_offset(own_end_for_epoch: Option<(i32, i64)>, diverging: (i32, i64)) -> i64 {
    let (epoch, end) = diverging;
    match own_end_for_epoch {
        Some((_, own_end)) if epoch >= 0 => own_end.min(end),
        _ => end.max(0),
    }
}

/// A follower's progress as its fetches tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The offset of its next fetch: it holds (durably) everything below.
    log_end: i64,
    /// The last time its log end reached the leader's log end (ms).
    caught_up_ms: i64,
    /// The time of its previous fetch, and the leader's log end then.
    last_fetch_ms: i64,
    leader_end_at_last_fetch: i64,
}

/// An ISR change this leader wants the controller to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrRequest {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

#[derive(Debug, Clone)]
pub struct ReplicaSet {
    me: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The ISR this leader asked for and the metadata does not show yet.
    pending: Option<Vec<i32>>,
    followers: BTreeMap<i32, Progress>,
}

impl ReplicaSet {
    pub fn new(me: i32) -> Self {
        ReplicaSet {
            me,
            replicas: Vec::new(),
            isr: Vec::new(),
            leader: -1,
            leader_epoch: -1,
            partition_epoch: -1,
            pending: None,
            followers: BTreeMap::new(),
        }
    }

    pub fn me(&self) -> i32 {
        self.me
    }

    pub fn is_leader(&self) -> bool {
        self.leader == self.me
    }

    /// Takes the metadata's latest state of the partition. A new leader epoch forgets what
    /// followers told the previous one (their logs may be truncated now); a new partition
    /// epoch settles a pending ISR change (made or refused).
    pub fn apply(
        &mut self,
        replicas: &[i32],
        isr: &[i32],
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        now_ms: i64,
    ) {
        if leader_epoch != self.leader_epoch || leader != self.leader {
            self.followers.clear();
        }
        if partition_epoch != self.partition_epoch {
            self.pending = None;
        }
        self.replicas = replicas.to_vec();
        self.isr = isr.to_vec();
        self.leader = leader;
        self.leader_epoch = leader_epoch;
        self.partition_epoch = partition_epoch;
        self.followers.retain(|id, _| replicas.contains(id));
        // A follower the new leader has not heard from yet counts as caught up now: it gets
        // replica.lag.time.max.ms to show up before it leaves the ISR.
        for follower in replicas.iter().filter(|r| **r != self.me) {
            self.followers.entry(*follower).or_insert(Progress {
                log_end: -1,
                caught_up_ms: now_ms,
                last_fetch_ms: now_ms,
                leader_end_at_last_fetch: -1,
            });
        }
        self.check();
    }

    /// Whether this leader waits for no one: it is the only replica in sync.
    pub fn alone(&self) -> bool {
        self.is_leader() && self.isr == [self.me] && self.pending.is_none()
    }

    /// A follower fetched from `fetch_offset` while the leader's log ended at `leader_end`.
    /// Returns an ISR expansion to ask for when the follower has caught up to `hw` (Kafka:
    /// its log end is at least the high watermark and the start of this leader's epoch).
    pub fn follower_fetched(
        &mut self,
        follower: i32,
        fetch_offset: i64,
        leader_end: i64,
        hw: i64,
        epoch_start: i64,
        now_ms: i64,
    ) -> Option<IsrRequest> {
        let progress = self.followers.get_mut(&follower)?;
        if fetch_offset >= leader_end {
            progress.caught_up_ms = now_ms;
        } else if fetch_offset >= progress.leader_end_at_last_fetch {
            progress.caught_up_ms = progress.caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end = fetch_offset;
        progress.last_fetch_ms = now_ms;
        progress.leader_end_at_last_fetch = leader_end;
        let joins = self.is_leader()
            && !self.isr.contains(&follower)
            && self.pending.is_none()
            && fetch_offset >= hw
            && fetch_offset >= epoch_start;
        if !joins {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.push(follower);
        Some(self.request(isr))
    }

    /// The followers in sync that have not caught up for `max_lag_ms`: an ISR without them.
    pub fn lagging(&mut self, now_ms: i64, max_lag_ms: i64) -> Option<IsrRequest> {
        if !self.is_leader() || self.pending.is_some() {
            return None;
        }
        let isr: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.me
                    || self
                        .followers
                        .get(r)
                        .is_some_and(|p| now_ms - p.caught_up_ms <= max_lag_ms)
            })
            .collect();
        (isr != self.isr).then(|| self.request(isr))
    }

    fn request(&mut self, isr: Vec<i32>) -> IsrRequest {
        self.pending = Some(isr.clone());
        self.check();
        IsrRequest {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        }
    }

    /// The controller refused (or never got) the request: it may be asked again.
    pub fn request_failed(&mut self, partition_epoch: i32) {
        if self.partition_epoch == partition_epoch {
            self.pending = None;
        }
    }

    /// The high watermark: what every replica that may be in sync holds (the ISR, and a
    /// follower joining it: the "maximal" ISR, so that a follower that becomes in sync is
    /// never behind it). `None` if not leader or a member's log end is not known yet.
    pub fn high_watermark(&self, leader_end: i64) -> Option<i64> {
        if !self.is_leader() {
            return None;
        }
        let mut hw = leader_end;
        let members = self.isr.iter().chain(self.pending.iter().flatten());
        for member in members.filter(|m| **m != self.me) {
            let end = self.followers.get(member).map_or(-1, |p| p.log_end);
            if end < 0 {
                return None;
            }
            hw = hw.min(end);
        }
        Some(hw)
    }

    /// The ISR's size as the metadata has it (min.insync.replicas counts these).
    pub fn in_sync(&self) -> usize {
        self.isr.len()
    }

    fn check(&self) {
        assert!(
            self.leader < 0 || self.isr.contains(&self.leader) || self.isr.is_empty(),
            "the leader {} is in sync: {:?}",
            self.leader,
            self.isr
        );
        assert!(
            self.isr.iter().all(|r| self.replicas.contains(r)),
            "the ISR {:?} is replicas {:?}",
            self.isr,
            self.replicas
        );
        if let Some(pending) = &self.pending {
            assert!(
                pending.iter().all(|r| self.replicas.contains(r)) && pending.contains(&self.me),
                "a pending ISR {pending:?} is replicas {:?} with the leader",
                self.replicas
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader_of_three() -> ReplicaSet {
        let mut set = ReplicaSet::new(1);
        set.apply(&[1, 2, 3], &[1, 2, 3], 1, 5, 10, 0);
        set
    }

    #[test]
    fn the_high_watermark_is_what_every_in_sync_replica_holds() {
        let mut set = leader_of_three();
        assert_eq!(set.high_watermark(100), None, "followers not heard from");
        assert_eq!(set.follower_fetched(2, 100, 100, 0, 0, 1), None);
        assert_eq!(set.high_watermark(100), None);
        set.follower_fetched(3, 60, 100, 0, 0, 1);
        assert_eq!(set.high_watermark(100), Some(60));
        set.follower_fetched(3, 100, 120, 60, 0, 2);
        assert_eq!(set.high_watermark(120), Some(100));
        assert!(!set.alone());
    }

    #[test]
    fn a_lagging_follower_leaves_and_a_caught_up_one_joins() {
        let mut set = leader_of_three();
        set.follower_fetched(2, 100, 100, 0, 0, 1_000);
        set.follower_fetched(3, 50, 100, 0, 0, 1_000);
        // 3 keeps fetching but never reaches the log end: it leaves after the lag time.
        set.follower_fetched(3, 60, 200, 0, 0, 20_000);
        set.follower_fetched(2, 200, 200, 0, 0, 20_000);
        assert_eq!(set.lagging(25_000, 30_000), None);
        let shrink = set.lagging(40_000, 30_000).expect("3 lags");
        assert_eq!(
            (shrink.isr.clone(), shrink.partition_epoch),
            (vec![1, 2], 10)
        );
        assert_eq!(set.lagging(40_000, 30_000), None, "one request at a time");
        // The high watermark still waits for 3 until the metadata shows the change.
        assert_eq!(set.high_watermark(200), Some(60));
        set.apply(&[1, 2, 3], &[1, 2], 1, 5, 11, 40_000);
        set.follower_fetched(2, 200, 200, 60, 0, 40_001);
        assert_eq!(set.high_watermark(200), Some(200));
        // 3 catches up to the high watermark: it asks to join.
        let grow = set
            .follower_fetched(3, 200, 200, 200, 0, 41_000)
            .expect("joins");
        assert_eq!(grow.isr, vec![1, 2, 3]);
        set.request_failed(11);
        assert!(set.follower_fetched(3, 200, 200, 200, 0, 41_001).is_some());
    }

    #[test]
    fn a_diverged_follower_is_not_counted_until_it_truncated() {
        // The leader's epoch 5 ended at 100 (epoch 6 from there); a deposed leader of epoch
        // 5 fetches from 120: it holds other records in 100..120.
        assert!(!counts_as_progress(Some((5, 100)), 5, 120, 150));
        assert!(
            counts_as_progress(Some((5, 100)), 5, 100, 150),
            "truncated to 100"
        );
        assert!(counts_as_progress(Some((6, 150)), 6, 150, 150));
        // An epoch the leader never had (a deposed leader's own): diverged.
        assert!(!counts_as_progress(Some((5, 100)), 7, 100, 150));
        // Past the leader's end, or an empty follower.
        assert!(!counts_as_progress(Some((6, 150)), 6, 151, 150));
        assert!(counts_as_progress(None, -1, 0, 150));
        assert_eq!(truncation_offset(Some((5, 120)), (5, 100)), 100);
        assert_eq!(truncation_offset(Some((4, 90)), (5, 100)), 90);
        assert_eq!(truncation_offset(None, (-1, -1)), 0);
    }

    #[test]
    fn a_new_leader_epoch_forgets_follower_progress() {
        let mut set = leader_of_three();
        set.follower_fetched(2, 100, 100, 0, 0, 1);
        set.follower_fetched(3, 100, 100, 0, 0, 1);
        assert_eq!(set.high_watermark(100), Some(100));
        set.apply(&[1, 2, 3], &[1, 2, 3], 2, 6, 11, 2);
        assert_eq!(set.high_watermark(100), None, "not the leader");
        set.apply(&[1, 2, 3], &[1, 2, 3], 1, 7, 12, 3);
        assert_eq!(
            set.high_watermark(100),
            None,
            "progress is from an older epoch"
        );
        let mut alone = ReplicaSet::new(1);
        alone.apply(&[1], &[1], 1, 0, 0, 0);
        assert!(alone.alone());
        assert_eq!(alone.high_watermark(42), Some(42));
    }
}
