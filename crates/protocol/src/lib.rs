//! The Kafka wire protocol as Sluice speaks it.
//!
//! Owns: reading length-prefixed frames with a size cap ([`frame`]), parsing request headers
//! ([`header`]), the table of APIs and versions the broker advertises ([`versions`]),
//! encoding responses as a list of chunks ([`response`]) including Fetch responses whose
//! record data stays in the log's files ([`fetch`]), and writing chunks to a socket with
//! `sendfile` or by copying ([`writer`]).
//!
//! Message codecs come from the `kafka-protocol` crate, except the Fetch response, which is
//! encoded here so that record data is never copied into memory.
//!
//! Depends on `sluice-log` only for [`sluice_log::FileRegion`]; must not depend on the broker
//! (no handlers, no state).

pub mod fetch;
pub mod frame;
pub mod header;
pub mod response;
pub mod versions;
pub mod writer;

pub use kafka_protocol;
