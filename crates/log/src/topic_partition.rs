use std::fmt;

/// A partition of a topic; its directory is `<topic>-<partition>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Parses a partition directory name. Topic names may contain '-', so the partition
    /// number is whatever follows the last one.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (topic, partition) = name.rsplit_once('-')?;
        if topic.is_empty() || partition.is_empty() || partition.starts_with('+') {
            return None;
        }
        let partition: i32 = partition.parse().ok()?;
        (partition >= 0).then(|| TopicPartition::new(topic, partition))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_roundtrip_with_dashes_in_topic() {
        let tp = TopicPartition::new("my-topic-v2", 17);
        assert_eq!(tp.dir_name(), "my-topic-v2-17");
        assert_eq!(TopicPartition::from_dir_name(&tp.dir_name()), Some(tp));
        assert_eq!(TopicPartition::from_dir_name("nodash"), None);
        assert_eq!(
            TopicPartition::from_dir_name("t--1"),
            Some(TopicPartition::new("t-", 1))
        );
        assert_eq!(TopicPartition::from_dir_name("t-+1"), None);
        assert_eq!(TopicPartition::from_dir_name("-3"), None);
    }
}
