//! Fuzzes what the broker does with a frame before any handler runs: header parsing, the
//! version check, body decoding, and for Produce the record batches (structure, CRC, and the
//! records inside, decompressed). Nothing may panic or abort.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run request_decoder` (cargo-fuzz wants nightly flags;
//! RUSTC_BOOTSTRAP lets the stable toolchain accept them).
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::RequestKind;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::header::parse_request;
use sluice_record::Batches;

// What the `sluice` binary installs; it makes codec capacity bombs harmless.
use sluice_broker::{GuardedAllocator, servable};

#[global_allocator]
static ALLOCATOR: GuardedAllocator = GuardedAllocator;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_request(Bytes::copy_from_slice(data)) else { return };
    if !servable(request.api_key, request.api_version) {
        return;
    }
    let Ok(kind) = request.decode_body() else { return };
    if let RequestKind::Produce(produce) = kind {
        for topic in &produce.topic_data {
            for partition in &topic.partition_data {
                let Some(records) = &partition.records else { continue };
                for batch in Batches::new(records) {
                    let Ok(batch) = batch else { break };
                    if batch.validate_from_producer().is_ok()
                        && let Ok(decoded) = batch.records(1 << 20)
                    {
                        for record in decoded.iter() {
                            std::hint::black_box(record);
                        }
                    }
                }
            }
        }
    }
});
