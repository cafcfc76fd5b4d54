//! The Kafka wire protocol as Sluice speaks it.
//!
//! Owns: reading length-prefixed frames with a size cap ([`frame`]), parsing request headers
//! ([`header`]), encoding responses as a list of chunks ([`response`]) including Fetch
//! responses whose record data stays in files ([`fetch`]), and writing chunks to a socket
//! ([`writer`]), the one place that decides between `sendfile` and copying.
//!
//! Message codecs come from the `kafka-protocol` crate, except the Fetch response, which is
//! encoded here so that record data is never copied into memory.
//!
//! Depends on no other Sluice crate (a file range is its own [`response::FileChunk`]); must not
//! depend on the broker (no handlers, no state). Which APIs and versions are served is the
//! broker's handler table, not this crate's.

pub mod fetch;
pub mod frame;
pub mod header;
pub mod response;
pub mod writer;

pub use kafka_protocol;
