//! Bad input from a raw socket: every malformed frame gets an error response or a closed
//! connection, and the broker keeps serving everybody else.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use common::{RawClient, start_broker};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

/// Sends `bytes` and returns whether the broker closed the connection without answering.
fn closes_connection(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut buf = [0u8; 16];
    // End of stream or a reset: closed. Any byte: an answer.
    !matches!(stream.read(&mut buf), Ok(n) if n > 0)
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn still_serving(addr: SocketAddr) {
    let mut client = RawClient::connect(addr);
    let response: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(
        dir.path(),
        &[
            ("socket.request.max.bytes", "1048576"),
            ("socket.max.inflight.bytes", "2097152"),
        ],
    )
    .await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        // A healthy client stays connected through all of it.
        let mut bystander = RawClient::connect(addr);

        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("negative size", (-5i32).to_be_bytes().to_vec()),
            ("zero size", 0i32.to_be_bytes().to_vec()),
            (
                "over socket.request.max.bytes",
                (64i32 << 20).to_be_bytes().to_vec(),
            ),
            ("header too short", frame(&[0, 18, 0])),
            (
                "unknown api key",
                frame(&[0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0, 0]),
            ),
            (
                "unsupported fetch version",
                frame(&[0, 1, 0, 99, 0, 0, 0, 1, 0, 0]),
            ),
            (
                "produce v2 (advertised, refused on use)",
                frame(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
            ),
            (
                "client id past the end",
                frame(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 60, b'x']),
            ),
            (
                "metadata body with a huge array",
                frame(&[0, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0x7f, 0xff, 0xff, 0xff]),
            ),
            (
                "random garbage",
                frame(
                    &(0..200u32)
                        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                        .collect::<Vec<_>>(),
                ),
            ),
        ];
        for (name, bytes) in cases {
            assert!(
                closes_connection(addr, &bytes),
                "{name}: connection not closed"
            );
            still_serving(addr);
        }

        // A client that announces a frame and goes away mid-body.
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(&(512 * 1024i32).to_be_bytes()).unwrap();
        stream.write_all(&[0u8; 1000]).unwrap();
        drop(stream);
        still_serving(addr);

        // ApiVersions of an unknown version gets UNSUPPORTED_VERSION and the table (KIP-511).
        let mut client = RawClient::connect(addr);
        let mut stream = client.stream().try_clone().unwrap();
        stream
            .write_all(&frame(&[0, 18, 0, 77, 0, 0, 0, 9, 0, 0, 0]))
            .unwrap();
        let mut body = client.read_frame().unwrap();
        assert_eq!(&body[..4], &9i32.to_be_bytes());
        let mut rest = body.split_off(4);
        let response = ApiVersionsResponse::decode(&mut rest, 0).unwrap();
        assert_eq!(response.error_code, 35);
        assert!(
            response
                .api_keys
                .iter()
                .any(|k| k.api_key == ApiKey::Fetch as i16)
        );

        let response: ApiVersionsResponse =
            bystander.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert_eq!(response.error_code, 0);
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_batches_get_per_partition_errors_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        let _: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_static_str("bad")))),
            ])),
        );
        let mut builder = BatchBuilder::new(Compression::Lz4);
        builder.push(OwnedRecord::new(
            None,
            Some(vec![7; 100]),
            1_700_000_000_000,
        ));
        let good = builder.build().unwrap();
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        let mut truncated = good.clone();
        truncated.truncate(good.len() - 10);
        let mut huge = BatchBuilder::new(Compression::None);
        huge.push(OwnedRecord::new(None, Some(vec![1; 1_100_000]), 0));
        let cases = [
            (bad_crc, 2),                // CORRUPT_MESSAGE
            (truncated, 2),              // CORRUPT_MESSAGE
            (huge.build().unwrap(), 10), // MESSAGE_TOO_LARGE
            (
                b"not a batch at all....................................................".to_vec(),
                2,
            ),
        ];
        for (records, code) in cases {
            let request = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("bad")))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(Bytes::from(records))),
                        ]),
                ]);
            let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
            assert_eq!(
                response.responses[0].partition_responses[0].error_code,
                code
            );
        }
        // Unknown partition, and the connection is still good for a valid batch at offset 0.
        let request = |partition: i32, records: Vec<u8>| {
            ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("bad")))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(partition)
                                .with_records(Some(Bytes::from(records))),
                        ]),
                ])
        };
        let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request(5, good.clone()));
        assert_eq!(response.responses[0].partition_responses[0].error_code, 3);
        let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request(0, good));
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(
            (p.error_code, p.base_offset),
            (0, 0),
            "nothing of the bad batches was written"
        );
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}
