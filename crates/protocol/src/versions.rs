//! The APIs and versions Sluice advertises in ApiVersions.
//!
//! Only what is implemented and tested is listed. One deliberate exception (DESIGN.md §3):
//! Produce is advertised from v0, because librdkafka disables compression when a broker's
//! Produce range does not start at v0; versions 0-2 are refused when actually used (no
//! current client sends them).

use kafka_protocol::messages::ApiKey;

/// An advertised version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn range(key: ApiKey, min: i16, max: i16) -> ApiRange {
    ApiRange { key, min, max }
}

/// Everything the broker answers, with the versions it advertises.
pub const SUPPORTED: &[ApiRange] = &[
    range(ApiKey::Produce, 0, 11),
    range(ApiKey::Fetch, 4, 12),
    range(ApiKey::ListOffsets, 1, 7),
    range(ApiKey::Metadata, 0, 12),
    range(ApiKey::ApiVersions, 0, 3),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::DescribeLogDirs, 1, 4),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::DescribeCluster, 0, 1),
    range(ApiKey::FindCoordinator, 0, 4),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::OffsetCommit, 2, 8),
    range(ApiKey::OffsetFetch, 1, 8),
    range(ApiKey::ListGroups, 0, 4),
    range(ApiKey::DescribeGroups, 0, 5),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::InitProducerId, 0, 4),
];

/// The advertised range of `key`, if the broker supports it at all.
pub fn advertised(key: ApiKey) -> Option<ApiRange> {
    SUPPORTED.iter().copied().find(|r| r.key == key)
}

/// Whether a request of this key and version can be served: advertised, and decodable by
/// the codec (which excludes Produce v0-2).
pub fn servable(key: ApiKey, version: i16) -> bool {
    let decodable = key.valid_versions();
    advertised(key).is_some_and(|r| r.min <= version && version <= r.max)
        && decodable.min <= version
        && version <= decodable.max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_versions_are_within_what_the_codec_knows() {
        for api in SUPPORTED {
            let codec = api.key.valid_versions();
            assert!(
                api.max <= codec.max,
                "{:?} advertises v{} beyond the codec",
                api.key,
                api.max
            );
            assert!(api.min <= api.max);
            if api.key != ApiKey::Produce {
                assert!(
                    api.min >= codec.min,
                    "{:?} advertises v{} below the codec",
                    api.key,
                    api.min
                );
            }
        }
        assert!(servable(ApiKey::Produce, 3));
        assert!(!servable(ApiKey::Produce, 2));
        assert!(!servable(ApiKey::Fetch, 13));
        assert!(servable(ApiKey::JoinGroup, 5));
        assert!(servable(ApiKey::InitProducerId, 0));
        assert!(!servable(ApiKey::AddPartitionsToTxn, 0));
    }
}
