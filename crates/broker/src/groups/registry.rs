//! The groups the coordinator knows, each behind its own mutex. The registry's own lock is
//! held only to find, add or remove a group, never while a group is worked on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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
