//! Sluice's metadata quorum: Raft consensus (TiKV's `raft-rs`, a port of etcd's Raft) on a
//! durable log of its own, in the shape of Kafka's KRaft: a fixed set of voters
//! (`controller.quorum.voters`), one leader that orders every metadata change.
//!
//! Owns: the voter ([`QuorumNode`]: election, replication, commit, persistence before any
//! message that depends on it), its stable storage ([`storage`]), and a deterministic
//! simulator ([`sim`]) that runs whole quorums under crashes, power loss, lost and
//! reordered messages and network partitions from one seed, with a checker.
//!
//! Must not depend on: the broker, the Kafka protocol, an async runtime, the network or the
//! wall clock. The caller ticks the node from its own clock and carries its messages; that
//! is what lets the simulator replay a failing seed exactly.

mod log_view;
pub mod node;
pub mod sim;
pub mod storage;

pub use node::{Committed, NodeConfig, NodeError, Output, ProposeError, QuorumNode, Restore};
pub use raft::eraftpb::Message;
pub use storage::{Disk, FileDisk, SimDisk, StableStore, StorageError};

/// Encodes a Raft message for the wire.
pub fn encode_message(message: &Message) -> Vec<u8> {
    use protobuf::Message as _;
    message
        .write_to_bytes()
        .expect("an in-memory message always encodes")
}

/// Decodes a Raft message from the wire; `None` for bytes that are not one.
pub fn decode_message(bytes: &[u8]) -> Option<Message> {
    use protobuf::Message as _;
    Message::parse_from_bytes(bytes).ok()
}
