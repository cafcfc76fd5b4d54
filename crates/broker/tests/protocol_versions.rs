//! Every advertised API at every advertised version, over TCP: the request is encoded and
//! the response decoded with the reference codec (`kafka-protocol`), and checked.

mod common;

use bytes::Bytes;
use common::{RawClient, start_broker};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_record::{BatchBuilder, Compression, OwnedRecord};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn batch(value: &str, timestamp: i64) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None);
    builder.push(OwnedRecord::new(
        Some(b"k".to_vec()),
        Some(value.as_bytes().to_vec()),
        timestamp,
    ));
    Bytes::from(builder.build().unwrap())
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let (_, min, max) = sluice_broker::advertised_apis()
        .find(|(k, _, _)| *k == key)
        .expect("advertised");
    min.max(key.valid_versions().min)..=max
}

fn create_topic(client: &mut RawClient, topic: &str, partitions: i32) {
    let request = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name(topic))
            .with_num_partitions(partitions)
            .with_replication_factor(1),
    ]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(
        response.topics[0].error_code, 0,
        "{:?}",
        response.topics[0].error_message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_at_every_advertised_version() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);

        for v in versions(ApiKey::ApiVersions) {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("raw"))
                .with_client_software_version(StrBytes::from_static_str("1"));
            let response: ApiVersionsResponse = c.call(ApiKey::ApiVersions, v, &request);
            assert_eq!(response.error_code, 0);
            let produce = response
                .api_keys
                .iter()
                .find(|k| k.api_key == ApiKey::Produce as i16)
                .unwrap();
            assert_eq!(produce.min_version, 0, "Produce must be advertised from v0");
            let listed: Vec<(i16, i16, i16)> = response
                .api_keys
                .iter()
                .map(|k| (k.api_key, k.min_version, k.max_version))
                .collect();
            let table: Vec<(i16, i16, i16)> = sluice_broker::advertised_apis()
                .map(|(key, min, max)| (key as i16, min, max))
                .collect();
            assert_eq!(listed, table, "v{v}: ApiVersions lists the handler table");
        }

        create_topic(&mut c, "versions", 2);
        for v in versions(ApiKey::Metadata) {
            let topics = if v == 0 { Some(vec![]) } else { None };
            let response: MetadataResponse = c.call(
                ApiKey::Metadata,
                v,
                &MetadataRequest::default().with_topics(topics),
            );
            assert_eq!(response.brokers.len(), 1, "v{v}");
            let topic = response
                .topics
                .iter()
                .find(|t| t.name == Some(name("versions")))
                .expect("listed");
            assert_eq!(topic.partitions.len(), 2, "v{v}");
            // Auto-creation through a named request.
            let auto = format!("auto-{v}");
            let request = MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name(&auto))),
            ]));
            let response: MetadataResponse = c.call(ApiKey::Metadata, v, &request);
            assert_eq!(response.topics[0].error_code, 0, "v{v}");
            assert_eq!(response.topics[0].partitions.len(), 1, "v{v}");
        }

        let metadata: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("versions"))),
            ])),
        );
        let topic_id = metadata.topics[0].topic_id;
        assert!(!topic_id.is_nil());
        let mut produced = 0i64;
        for v in versions(ApiKey::Produce) {
            let request = ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![
                    // From v13 the topic is named by its ID.
                    if v >= 13 {
                        TopicProduceData::default().with_topic_id(topic_id)
                    } else {
                        TopicProduceData::default().with_name(name("versions"))
                    }
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch(
                                &format!("v{v}"),
                                1_700_000_000_000 + i64::from(v),
                            ))),
                    ]),
                ]);
            let response: ProduceResponse = c.call(ApiKey::Produce, v, &request);
            let p = &response.responses[0].partition_responses[0];
            assert_eq!((p.error_code, p.base_offset), (0, produced), "v{v}");
            produced += 1;
            if v >= 13 {
                assert_eq!(response.responses[0].topic_id, topic_id);
                let unknown = ProduceRequest::default()
                    .with_acks(1)
                    .with_timeout_ms(5000)
                    .with_topic_data(vec![
                        TopicProduceData::default()
                            .with_topic_id(uuid::Uuid::new_v4())
                            .with_partition_data(vec![
                                PartitionProduceData::default()
                                    .with_index(0)
                                    .with_records(Some(batch("lost", 1_700_000_000_000))),
                            ]),
                    ]);
                let response: ProduceResponse = c.call(ApiKey::Produce, v, &unknown);
                assert_eq!(
                    response.responses[0].partition_responses[0].error_code,
                    ResponseError::UnknownTopicId.code()
                );
            }
        }

        for v in versions(ApiKey::Fetch) {
            // From v13 the topic is named by its ID.
            let topic = if v >= 13 {
                FetchTopic::default().with_topic_id(topic_id)
            } else {
                FetchTopic::default().with_topic(name("versions"))
            };
            let request = FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![topic.with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_fetch_offset(1)
                                .with_partition_max_bytes(1 << 20),
                        ])]);
            let response: FetchResponse = c.call(ApiKey::Fetch, v, &request);
            if v >= 13 {
                assert_eq!(response.responses[0].topic_id, topic_id, "v{v}");
            }
            let p = &response.responses[0].partitions[0];
            assert_eq!((p.error_code, p.high_watermark), (0, produced), "v{v}");
            if v >= 9 {
                let fenced = FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_topics(vec![
                        if v >= 13 {
                            FetchTopic::default().with_topic_id(topic_id)
                        } else {
                            FetchTopic::default().with_topic(name("versions"))
                        }
                        .with_partitions(vec![
                            FetchPartition::default()
                                .with_partition(0)
                                .with_current_leader_epoch(1)
                                .with_partition_max_bytes(1 << 20),
                        ]),
                    ]);
                let response: FetchResponse = c.call(ApiKey::Fetch, v, &fenced);
                assert_eq!(
                    response.responses[0].partitions[0].error_code,
                    ResponseError::UnknownLeaderEpoch.code(),
                    "v{v}"
                );
            }
            let records = p.records.clone().expect("records");
            let batches: Vec<_> = sluice_record::Batches::new(&records)
                .map(|b| b.unwrap().base_offset())
                .collect();
            assert_eq!(batches.first(), Some(&1), "v{v}");
        }

        for v in versions(ApiKey::ListOffsets) {
            let mut timestamps = vec![-1i64, -2, 1_699_999_999_999];
            if v >= 7 {
                timestamps.push(-3);
            }
            if v >= 8 {
                timestamps.push(-4);
            }
            if v >= 9 {
                timestamps.push(-5);
            }
            for timestamp in timestamps {
                let request = ListOffsetsRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_topics(vec![
                        ListOffsetsTopic::default()
                            .with_name(name("versions"))
                            .with_partitions(vec![
                                ListOffsetsPartition::default()
                                    .with_partition_index(0)
                                    .with_timestamp(timestamp),
                            ]),
                    ]);
                let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, v, &request);
                let p = &response.topics[0].partitions[0];
                assert_eq!(p.error_code, 0, "v{v} ts {timestamp}");
                let expected = match timestamp {
                    -1 => produced,
                    -3 => produced - 1,
                    // Latest tiered: nothing is tiered.
                    -5 => -1,
                    // Earliest, earliest local (every segment is local), a past timestamp.
                    _ => 0,
                };
                assert_eq!(p.offset, expected, "v{v} ts {timestamp}");
            }
            // A current leader epoch newer than the partition's is UNKNOWN_LEADER_EPOCH,
            // an older one FENCED_LEADER_EPOCH (the partition is at epoch 0).
            if v >= 4 {
                for (epoch, expected) in [
                    (0, 0),
                    (-1, 0),
                    (3, ResponseError::UnknownLeaderEpoch.code()),
                    (-2, ResponseError::FencedLeaderEpoch.code()),
                ] {
                    let request = ListOffsetsRequest::default()
                        .with_replica_id(BrokerId(-1))
                        .with_topics(vec![
                            ListOffsetsTopic::default()
                                .with_name(name("versions"))
                                .with_partitions(vec![
                                    ListOffsetsPartition::default()
                                        .with_partition_index(0)
                                        .with_current_leader_epoch(epoch)
                                        .with_timestamp(-1),
                                ]),
                        ]);
                    let response: ListOffsetsResponse = c.call(ApiKey::ListOffsets, v, &request);
                    assert_eq!(
                        response.topics[0].partitions[0].error_code, expected,
                        "v{v} epoch {epoch}"
                    );
                }
            }
        }

        for v in versions(ApiKey::CreateTopics) {
            let topic = format!("created-{v}");
            let request = CreateTopicsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(name(&topic))
                        .with_num_partitions(3)
                        .with_replication_factor(1)
                        .with_configs(vec![
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_static_str("retention.ms"))
                                .with_value(Some(StrBytes::from_static_str("60000"))),
                        ]),
                ]);
            let response: CreateTopicsResponse = c.call(ApiKey::CreateTopics, v, &request);
            assert_eq!(
                response.topics[0].error_code, 0,
                "v{v}: {:?}",
                response.topics[0].error_message
            );
            if v >= 5 {
                assert_eq!(response.topics[0].num_partitions, 3);
            }
            let again: CreateTopicsResponse = c.call(ApiKey::CreateTopics, v, &request);
            assert_eq!(again.topics[0].error_code, 36, "v{v}: TOPIC_ALREADY_EXISTS");
        }

        for v in versions(ApiKey::CreatePartitions) {
            let request = CreatePartitionsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(name("created-2"))
                        .with_count(4 + i32::from(v)),
                ]);
            let response: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, v, &request);
            assert_eq!(
                response.results[0].error_code, 0,
                "v{v}: {:?}",
                response.results[0].error_message
            );
        }

        for v in versions(ApiKey::DescribeConfigs) {
            let request = DescribeConfigsRequest::default()
                .with_include_synonyms(v >= 1)
                .with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(StrBytes::from_static_str("created-2")),
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(StrBytes::from_static_str("1")),
                ]);
            let response: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, v, &request);
            let topic = &response.results[0];
            assert_eq!(topic.error_code, 0, "v{v}");
            let retention = topic
                .configs
                .iter()
                .find(|e| e.name.as_str() == "retention.ms")
                .unwrap();
            assert_eq!(retention.value.as_deref(), Some("60000"), "v{v}");
            assert_eq!(response.results[1].error_code, 0, "v{v}");
            assert!(!response.results[1].configs.is_empty());
        }

        for v in versions(ApiKey::AlterConfigs) {
            let request = AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("created-3"))
                    .with_configs(vec![
                        alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("retention.bytes"))
                            .with_value(Some(StrBytes::from_string(format!("{}", 1000 + v)))),
                    ]),
            ]);
            let response: AlterConfigsResponse = c.call(ApiKey::AlterConfigs, v, &request);
            assert_eq!(
                response.responses[0].error_code, 0,
                "v{v}: {:?}",
                response.responses[0].error_message
            );
        }

        for v in versions(ApiKey::IncrementalAlterConfigs) {
            let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("created-4"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(StrBytes::from_static_str("segment.ms"))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_static_str("100000"))),
                    ]),
            ]);
            let response: IncrementalAlterConfigsResponse =
                c.call(ApiKey::IncrementalAlterConfigs, v, &request);
            assert_eq!(
                response.responses[0].error_code, 0,
                "v{v}: {:?}",
                response.responses[0].error_message
            );
        }

        for v in versions(ApiKey::DeleteRecords) {
            let request = DeleteRecordsRequest::default()
                .with_timeout_ms(5000)
                .with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(name("versions"))
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(0)
                                .with_offset(i64::from(v) + 1),
                        ]),
                ]);
            let response: DeleteRecordsResponse = c.call(ApiKey::DeleteRecords, v, &request);
            let p = &response.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.low_watermark),
                (0, i64::from(v) + 1),
                "v{v}"
            );
        }

        for v in versions(ApiKey::DescribeCluster) {
            let response: DescribeClusterResponse = c.call(
                ApiKey::DescribeCluster,
                v,
                &DescribeClusterRequest::default(),
            );
            assert_eq!(response.error_code, 0);
            assert_eq!(response.brokers.len(), 1);
        }

        for v in versions(ApiKey::DescribeLogDirs) {
            let response: DescribeLogDirsResponse = c.call(
                ApiKey::DescribeLogDirs,
                v,
                &DescribeLogDirsRequest::default().with_topics(None),
            );
            assert_eq!(response.results.len(), 1, "v{v}");
            let versions_topic = response.results[0]
                .topics
                .iter()
                .find(|t| t.name == name("versions"))
                .unwrap();
            assert_eq!(versions_topic.partitions.len(), 2);
        }

        for v in versions(ApiKey::DeleteTopics) {
            let topic = format!("created-{}", v + 1);
            let request = if v >= 6 {
                DeleteTopicsRequest::default().with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name(&topic))),
                ])
            } else {
                DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
            }
            .with_timeout_ms(5000);
            let response: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, v, &request);
            assert_eq!(response.responses[0].error_code, 0, "v{v}");
            let again: DeleteTopicsResponse = c.call(ApiKey::DeleteTopics, v, &request);
            assert_eq!(
                again.responses[0].error_code, 3,
                "v{v}: UNKNOWN_TOPIC_OR_PARTITION"
            );
        }
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

/// The APIs Kafka 3.x-4.x clients and tools added: OffsetForLeaderEpoch, DescribeProducers,
/// DescribeTopicPartitions (paginated), GetTelemetrySubscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_apis_answer_at_every_advertised_version() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path(), &[]).await;
    let addr = broker.local_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        create_topic(&mut c, "epochs", 2);
        for i in 0..3 {
            let request = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(5000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(name("epochs"))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(0)
                                .with_records(Some(idempotent_batch(77, i))),
                        ]),
                ]);
            let response: ProduceResponse = c.call(ApiKey::Produce, 9, &request);
            assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
        }

        for v in versions(ApiKey::OffsetForLeaderEpoch) {
            use offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
            let ask = |partition: i32, current: i32, epoch: i32| {
                OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(current)
                    .with_leader_epoch(epoch)
            };
            let request = OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![
                    OffsetForLeaderTopic::default()
                        .with_topic(name("epochs"))
                        .with_partitions(vec![
                            ask(0, -1, 0),
                            ask(0, 0, 0),
                            ask(0, -1, 5),
                            ask(1, -1, 0),
                            ask(0, 3, 0),
                            ask(7, -1, 0),
                        ]),
                ]);
            let response: OffsetForLeaderEpochResponse =
                c.call(ApiKey::OffsetForLeaderEpoch, v, &request);
            let answers: Vec<(i16, i32, i64)> = response.topics[0]
                .partitions
                .iter()
                .map(|p| (p.error_code, p.leader_epoch, p.end_offset))
                .collect();
            assert_eq!(
                answers,
                [
                    (0, 0, 3),
                    (0, 0, 3),
                    (0, -1, -1),
                    (0, 0, 0),
                    (ResponseError::UnknownLeaderEpoch.code(), -1, -1),
                    (ResponseError::UnknownTopicOrPartition.code(), -1, -1),
                ],
                "v{v}: the current epoch ends at the log end (0 for an empty partition); \
                 a newer epoch has no answer"
            );
        }

        // Fetch v12+ with the epoch of the last record fetched: a fetcher whose log diverged
        // from this one is told where to truncate instead of getting records.
        let metadata: MetadataResponse = c.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(name("epochs"))),
            ])),
        );
        let epochs_id = metadata.topics[0].topic_id;
        for v in versions(ApiKey::Fetch).filter(|v| *v >= 12) {
            let mut fetch = |offset: i64, last_fetched_epoch: i32| {
                let request = FetchRequest::default()
                    .with_max_wait_ms(0)
                    .with_max_bytes(1 << 20)
                    .with_session_epoch(-1)
                    .with_topics(vec![
                        FetchTopic::default()
                            .with_topic(name("epochs"))
                            .with_partitions(vec![
                                FetchPartition::default()
                                    .with_partition(0)
                                    .with_fetch_offset(offset)
                                    .with_last_fetched_epoch(last_fetched_epoch)
                                    .with_partition_max_bytes(1 << 20),
                            ]),
                    ]);
                let mut request = request;
                if v >= 13 {
                    request.topics[0].topic_id = epochs_id;
                }
                let response: FetchResponse = c.call(ApiKey::Fetch, v, &request);
                let p = response.responses[0].partitions[0].clone();
                let records = p.records.as_ref().map_or(0, Bytes::len);
                (
                    p.error_code,
                    (p.diverging_epoch.epoch, p.diverging_epoch.end_offset),
                    records > 0,
                )
            };
            assert_eq!(fetch(2, 0), (0, (-1, -1), true), "v{v}: same history");
            assert_eq!(fetch(2, -1), (0, (-1, -1), true), "v{v}: no epoch given");
            assert_eq!(
                fetch(5, 0),
                (0, (0, 3), false),
                "v{v}: epoch 0 ended at 3, before the fetch offset"
            );
            assert_eq!(
                fetch(2, 4),
                (0, (-1, -1), false),
                "v{v}: an epoch that never led here diverges (no answer)"
            );
        }

        // The metadata quorum: a single node leads its one-voter quorum; every metadata
        // change moves the high watermark.
        let describe_quorum = |c: &mut RawClient, v: i16| -> DescribeQuorumResponse {
            use describe_quorum_request::{PartitionData, TopicData};
            let request = DescribeQuorumRequest::default().with_topics(vec![
                TopicData::default()
                    .with_topic_name(name("__cluster_metadata"))
                    .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
                TopicData::default()
                    .with_topic_name(name("epochs"))
                    .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
            ]);
            c.call(ApiKey::DescribeQuorum, v, &request)
        };
        for v in versions(ApiKey::DescribeQuorum) {
            let before = describe_quorum(&mut c, v);
            let quorum = &before.topics[0].partitions[0];
            assert_eq!(quorum.error_code, 0, "v{v}");
            assert_eq!(quorum.leader_id.0, 1, "v{v}: node.id 1 leads");
            assert!(quorum.leader_epoch >= 1, "v{v}");
            let voters: Vec<(i32, i64)> = quorum
                .current_voters
                .iter()
                .map(|r| (r.replica_id.0, r.log_end_offset))
                .collect();
            assert_eq!(voters.len(), 1, "v{v}: {voters:?}");
            assert!(voters[0].1 >= quorum.high_watermark - 1, "v{v}: {voters:?}");
            assert_eq!(
                before.topics[1].partitions[0].error_code,
                ResponseError::UnknownTopicOrPartition.code()
            );
            create_topic(&mut c, &format!("quorum-{v}"), 1);
            let after = describe_quorum(&mut c, v);
            assert!(
                after.topics[0].partitions[0].high_watermark > quorum.high_watermark,
                "v{v}: a topic creation is a committed entry"
            );
        }

        for v in versions(ApiKey::DescribeProducers) {
            let request = DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(name("epochs"))
                    .with_partition_indexes(vec![0, 1, 9]),
            ]);
            let response: DescribeProducersResponse =
                c.call(ApiKey::DescribeProducers, v, &request);
            let partitions = &response.topics[0].partitions;
            let producer = &partitions[0].active_producers;
            assert_eq!(producer.len(), 1, "v{v}");
            assert_eq!(
                (
                    producer[0].producer_id.0,
                    producer[0].producer_epoch,
                    producer[0].last_sequence
                ),
                (77, 0, 2)
            );
            assert!(partitions[1].active_producers.is_empty());
            assert_eq!(
                partitions[2].error_code,
                ResponseError::UnknownTopicOrPartition.code()
            );
        }

        create_topic(&mut c, "paged-a", 3);
        create_topic(&mut c, "paged-b", 2);
        for v in versions(ApiKey::DescribeTopicPartitions) {
            // Three partitions per page over a-0..2, b-0..1, epochs-0..1 (name order):
            // pages end at a-2, then b-1 + epochs-0, then epochs-1.
            let mut cursor = None;
            let mut seen = Vec::new();
            let mut pages = 0;
            loop {
                let request = DescribeTopicPartitionsRequest::default()
                    .with_topics(
                        ["paged-b", "epochs", "paged-a"]
                            .iter()
                            .map(|t| {
                                describe_topic_partitions_request::TopicRequest::default()
                                    .with_name(name(t))
                            })
                            .collect(),
                    )
                    .with_response_partition_limit(3)
                    .with_cursor(cursor.take());
                let response: DescribeTopicPartitionsResponse =
                    c.call(ApiKey::DescribeTopicPartitions, v, &request);
                pages += 1;
                for topic in &response.topics {
                    assert_eq!(topic.error_code, 0);
                    assert!(!topic.topic_id.is_nil());
                    for p in &topic.partitions {
                        assert_eq!(p.isr_nodes, p.replica_nodes);
                        seen.push(format!(
                            "{}-{}",
                            topic.name.as_ref().unwrap().0,
                            p.partition_index
                        ));
                    }
                }
                match response.next_cursor {
                    Some(next) => {
                        cursor = Some(
                            describe_topic_partitions_request::Cursor::default()
                                .with_topic_name(next.topic_name)
                                .with_partition_index(next.partition_index),
                        );
                    }
                    None => break,
                }
                assert!(pages < 10, "pagination ends");
            }
            assert_eq!(
                seen,
                [
                    "epochs-0",
                    "epochs-1",
                    "paged-a-0",
                    "paged-a-1",
                    "paged-a-2",
                    "paged-b-0",
                    "paged-b-1"
                ],
                "v{v}"
            );
            assert_eq!(pages, 3, "v{v}");
        }

        for v in versions(ApiKey::GetTelemetrySubscriptions) {
            let response: GetTelemetrySubscriptionsResponse = c.call(
                ApiKey::GetTelemetrySubscriptions,
                v,
                &GetTelemetrySubscriptionsRequest::default(),
            );
            assert_eq!(response.error_code, 0);
            assert!(
                !response.client_instance_id.is_nil(),
                "an instance id is given"
            );
            assert!(response.requested_metrics.is_empty(), "nothing to push");
        }
    })
    .await
    .unwrap();
    broker.shutdown().await.unwrap();
}

/// A batch of one record from idempotent producer `producer_id`, epoch 0, sequence `sequence`.
fn idempotent_batch(producer_id: i64, sequence: i32) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None).producer(producer_id, 0, sequence);
    builder.push(OwnedRecord::new(
        None,
        Some(b"v".to_vec()),
        1_700_000_000_000,
    ));
    Bytes::from(builder.build().unwrap())
}
