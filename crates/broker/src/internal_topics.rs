//! The topics the broker keeps for itself. Clients may read them but not write, delete or
//! truncate them; they are created by the broker when first needed.

/// Committed offsets and group metadata (the group coordinator's state).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Whether `topic` belongs to the broker itself.
pub fn is_internal(topic: &str) -> bool {
    topic == OFFSETS_TOPIC
}
