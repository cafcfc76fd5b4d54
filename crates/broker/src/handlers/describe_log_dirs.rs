//! DescribeLogDirs: the data directory, its partitions' sizes, and (v4) its disk space.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use sluice_protocol::response::Response;

use super::{Handler, Reply, RequestContext, ready, str_bytes, topic_name};
use crate::broker::Broker;

pub(super) struct DescribeLogDirs;

impl Handler for DescribeLogDirs {
    const API: ApiKey = ApiKey::DescribeLogDirs;
    const VERSIONS: (i16, i16) = (1, 4);
    type Request = DescribeLogDirsRequest;

    fn handle(broker: &Arc<Broker>, ctx: RequestContext, request: DescribeLogDirsRequest) -> Reply {
        ready(respond(broker, &ctx, &request))
    }
}

fn respond(
    broker: &Arc<Broker>,
    ctx: &RequestContext,
    request: &DescribeLogDirsRequest,
) -> Option<Response> {
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let wanted = |topic: &str, partition: i32| match &request.topics {
        None => true,
        Some(topics) => topics
            .iter()
            .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&partition)),
    };
    let image = broker.image();
    for topic in image.topics.values() {
        for index in 0..topic.partitions {
            if !wanted(&topic.name, index) {
                continue;
            }
            if let Some(partition) = broker.partition(&topic.name, index) {
                let size = partition.offsets().size_bytes;
                by_topic.entry(topic.name.clone()).or_default().push(
                    DescribeLogDirsPartition::default()
                        .with_partition_index(index)
                        .with_partition_size(size as i64),
                );
            }
        }
    }
    let dir = std::fs::canonicalize(&broker.config().data_dir)
        .unwrap_or_else(|_| broker.config().data_dir.clone());
    let (total, usable) = match rustix::fs::statvfs(&dir) {
        Ok(stat) => (
            (stat.f_blocks * stat.f_frsize) as i64,
            (stat.f_bavail * stat.f_frsize) as i64,
        ),
        Err(_) => (-1, -1),
    };
    let topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            DescribeLogDirsTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    let mut result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(&dir.to_string_lossy()))
        .with_topics(topics);
    if ctx.version >= 4 {
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    ctx.respond(&DescribeLogDirsResponse::default().with_results(vec![result]))
}
