//! The groups the coordinator knows, each behind its own mutex. The registry's own lock is
//! held only to find, add or remove a group, never while a group is worked on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use kafka_protocol::ResponseError;

use super::group::Group;

pub(super) type SharedGroup = Arc<Mutex<Group>>;

pub(super) fn lock(group: &SharedGroup) -> MutexGuard<'_, Group> {
    group.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
pub(super) struct GroupRegistry {
    groups: Mutex<HashMap<String, SharedGroup>>,
}

impl GroupRegistry {
    fn map(&self) -> MutexGuard<'_, HashMap<String, SharedGroup>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn find(&self, id: &str) -> Option<SharedGroup> {
        self.map().get(id).cloned()
    }

    /// The group, created empty (empty since `now_ms`) if it does not exist.
    pub fn find_or_create(&self, id: &str, now_ms: i64) -> SharedGroup {
        self.map()
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Group::new(id, now_ms))))
            .clone()
    }

    /// The group, created if it does not exist and the limits allow a new one: an id longer
    /// than `max_id_bytes` is INVALID_GROUP_ID; a new group beyond `max_groups` is
    /// COORDINATOR_NOT_AVAILABLE (retriable: empty groups expire).
    pub fn find_or_create_within(
        &self,
        id: &str,
        now_ms: i64,
        max_id_bytes: usize,
        max_groups: usize,
    ) -> Result<SharedGroup, ResponseError> {
        if id.len() > max_id_bytes {
            return Err(ResponseError::InvalidGroupId);
        }
        let mut groups = self.map();
        if let Some(group) = groups.get(id) {
            return Ok(group.clone());
        }
        if groups.len() >= max_groups {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let group = Arc::new(Mutex::new(Group::new(id, now_ms)));
        groups.insert(id.to_string(), group.clone());
        Ok(group)
    }

    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }

    /// Every group, for a pass over all of them (the lock is released before they are used).
    pub fn all(&self) -> Vec<SharedGroup> {
        self.map().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }
}
