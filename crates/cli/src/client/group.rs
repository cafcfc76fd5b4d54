//! `sluice group list|describe|reset-offsets|delete`.

use std::collections::BTreeMap;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Connection, OutputFormat, Report, TIMEOUT, admin_options, block_on, print_table};

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    #[command(after_help = "Examples:\n  sluice group list\n  sluice group list --format json")]
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Members, assignments, committed offsets, log end offsets and lag.
    #[command(
        after_help = "Examples:\n  sluice group describe billing\n  sluice group describe billing --format json | jq .total_lag"
    )]
    Describe {
        /// The group to describe.
        group: String,
        #[arg(long, value_enum, default_value = "text")]
        format: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Move a group's committed offsets (the group must have no members). Like Kafka's
    /// tool, it only shows the plan unless --execute is given.
    #[command(
        after_help = "Examples:\n  sluice group reset-offsets billing --topic orders --to-earliest            # the plan\n  sluice group reset-offsets billing --topic orders --to-earliest --execute  # commit it\n  sluice group reset-offsets billing --topic orders:0,1 --shift-by -100 --execute\n  sluice group reset-offsets billing --all-topics --to-datetime 2026-12-01T09:00:00.000 --execute"
    )]
    ResetOffsets {
        /// The group whose offsets move.
        group: String,
        /// Topic whose offsets move, or TOPIC:P,P,... for some partitions; repeatable.
        #[arg(long = "topic", short, required_unless_present = "all_topics")]
        topics: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long, conflicts_with = "topics")]
        all_topics: bool,
        #[command(flatten)]
        target: ResetTarget,
        /// Commit the new offsets (without it, only the plan is shown).
        #[arg(long, conflicts_with = "dry_run")]
        execute: bool,
        /// Show the plan only (the default; kept for scripts that say so).
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete groups (only groups without members) and their offsets.
    #[command(after_help = "Examples:\n  sluice group delete billing")]
    Delete {
        /// The groups to delete.
        #[arg(required = true)]
        groups: Vec<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ResetTarget {
    /// The log start of each partition.
    #[arg(long)]
    to_earliest: bool,
    /// The log end of each partition.
    #[arg(long)]
    to_latest: bool,
    /// This offset in every partition.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// First offset at or after this time: epoch milliseconds, RFC 3339, or Kafka's
    /// YYYY-MM-DDTHH:mm:SS[.sss] (UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    to_datetime: Option<i64>,
    /// Move the committed offset by N (negative: back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    shift_by: Option<i64>,
}

pub fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List { format, connection } => {
            let consumer = connection.query_consumer(None)?;
            connection.metadata(&consumer, None)?;
            let list = consumer
                .fetch_group_list(None, TIMEOUT)
                .context("cannot list groups")?;
            let mut rows: Vec<Vec<String>> = list
                .groups()
                .iter()
                .map(|g| {
                    vec![
                        g.name().to_string(),
                        g.state().to_string(),
                        g.protocol_type().to_string(),
                        g.members().len().to_string(),
                    ]
                })
                .collect();
            rows.sort();
            Report::default()
                .table(
                    "groups",
                    &["GROUP", "STATE", "PROTOCOL TYPE", "MEMBERS"],
                    rows,
                )
                .print(format);
            Ok(())
        }
        GroupCommand::Describe {
            group,
            format,
            connection,
        } => describe(&connection, &group, format),
        GroupCommand::ResetOffsets {
            group,
            topics,
            target,
            all_topics,
            execute,
            dry_run: _,
            connection,
        } => reset(&connection, &group, &topics, all_topics, &target, execute),
        GroupCommand::Delete { groups, connection } => {
            let admin = connection.admin()?;
            let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
            let results = block_on(admin.delete_groups(&refs, &admin_options()))?.map_err(|e| {
                anyhow::anyhow!("cannot reach a broker at {}: {e}", connection.bootstrap)
            })?;
            let mut failed = 0;
            for result in results {
                match result {
                    Ok(name) => crate::say!("deleted group {name}"),
                    Err((name, code)) => {
                        eprintln!("error: cannot delete group {name}: {code}");
                        failed += 1;
                    }
                }
            }
            anyhow::ensure!(failed == 0, "{failed} group(s) not deleted");
            Ok(())
        }
    }
}

/// A topic partition.
type Tp = (String, i32);

/// One member: id, client id, host, assigned partitions.
type Member = (String, String, String, Vec<Tp>);

/// The state and members of a group, as the coordinator reports them.
struct GroupView {
    state: String,
    protocol: String,
    members: Vec<Member>,
}

fn view(consumer: &BaseConsumer, group: &str) -> anyhow::Result<GroupView> {
    let list = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .with_context(|| format!("cannot describe group {group}"))?;
    let info = list
        .groups()
        .iter()
        .find(|g| g.name() == group)
        .with_context(|| format!("unknown group {group}"))?;
    Ok(GroupView {
        state: info.state().to_string(),
        protocol: info.protocol().to_string(),
        members: info
            .members()
            .iter()
            .map(|m| {
                (
                    m.id().to_string(),
                    m.client_id().to_string(),
                    m.client_host().to_string(),
                    m.assignment().map(decode_assignment).unwrap_or_default(),
                )
            })
            .collect(),
    })
}

/// The partitions of a consumer-protocol assignment (version, [topic, [partition]],
/// user data); empty if it is not one.
fn decode_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (buf.get(..n)?, buf.get(n..)?);
        *buf = tail;
        Some(head)
    }
    fn int(buf: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(buf, 4)?.try_into().ok()?))
    }
    let mut buf = bytes;
    let mut out = Vec::new();
    let parse = |buf: &mut &[u8], out: &mut Vec<(String, i32)>| -> Option<()> {
        take(buf, 2)?; // version
        for _ in 0..int(buf)?.clamp(0, 100_000) {
            let len = i16::from_be_bytes(take(buf, 2)?.try_into().ok()?);
            let topic =
                String::from_utf8_lossy(take(buf, usize::try_from(len).ok()?)?).into_owned();
            for _ in 0..int(buf)?.clamp(0, 1_000_000) {
                out.push((topic.clone(), int(buf)?));
            }
        }
        Some(())
    };
    if parse(&mut buf, &mut out).is_none() {
        out.clear();
    }
    out
}

/// Committed offsets of `group` for every partition of `topics` that has one.
fn committed(
    consumer: &BaseConsumer,
    connection: &Connection,
    topics: &[String],
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    let metadata = connection.metadata(consumer, None)?;
    let mut query = TopicPartitionList::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|n| n == t.name()))
    {
        for p in topic.partitions() {
            query.add_partition(topic.name(), p.id());
        }
    }
    if query.count() == 0 {
        return Ok(BTreeMap::new());
    }
    let found = consumer
        .committed_offsets(query, TIMEOUT)
        .context("cannot fetch committed offsets")?;
    Ok(found
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(((e.topic().to_string(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

fn describe(connection: &Connection, group: &str, format: OutputFormat) -> anyhow::Result<()> {
    let consumer = connection.query_consumer(Some(group))?;
    let metadata = connection.metadata(&consumer, None)?;
    let view = view(&consumer, group)?;
    anyhow::ensure!(view.state != "Dead", "unknown group {group}");
    let mut report = Report::default();
    report
        .title(format!(
            "group {group}: {} ({} member(s), protocol {:?})",
            view.state,
            view.members.len(),
            view.protocol
        ))
        .field("group", group)
        .field("state", view.state.clone())
        .field("protocol", view.protocol.clone())
        .field("member_count", view.members.len());
    let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
    let mut member_rows = Vec::new();
    for (id, client, host, assigned) in &view.members {
        for tp in assigned {
            owners.insert(tp.clone(), client.clone());
        }
        let partitions: Vec<String> = assigned.iter().map(|(t, p)| format!("{t}-{p}")).collect();
        member_rows.push(vec![
            id.clone(),
            client.clone(),
            host.clone(),
            partitions.join(","),
        ]);
    }
    report.table(
        "members",
        &["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"],
        member_rows,
    );
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| t.name().to_string())
        .collect();
    let offsets = committed(&consumer, connection, &topics)?;
    let mut keys: Vec<(String, i32)> = offsets.keys().cloned().collect();
    keys.extend(owners.keys().cloned());
    keys.sort();
    keys.dedup();
    let mut rows = Vec::new();
    let mut total_lag = 0i64;
    for (topic, partition) in keys {
        let (_, end) = consumer
            .fetch_watermarks(&topic, partition, TIMEOUT)
            .with_context(|| format!("offsets of {topic}-{partition}"))?;
        let committed = offsets.get(&(topic.clone(), partition)).copied();
        let lag = committed.map(|c| (end - c).max(0));
        total_lag += lag.unwrap_or(0);
        rows.push(vec![
            topic.clone(),
            partition.to_string(),
            committed.map_or("-".into(), |c| c.to_string()),
            end.to_string(),
            lag.map_or("-".into(), |l| l.to_string()),
            owners
                .get(&(topic, partition))
                .cloned()
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    report
        .table(
            "offsets",
            &[
                "TOPIC",
                "PARTITION",
                "COMMITTED",
                "END OFFSET",
                "LAG",
                "OWNER",
            ],
            rows,
        )
        .field("total_lag", total_lag)
        .footer(format!("total lag: {total_lag}"))
        .print(format);
    Ok(())
}

/// `--to-datetime`: epoch milliseconds or a date-time.
fn parse_time(text: &str) -> Result<i64, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|e| format!("{e}"));
    }
    super::parse_date_time_ms(text)
}

/// `--topic` values: a topic, or TOPIC:P,P,... for some of its partitions.
fn parse_topic_selection(topics: &[String]) -> anyhow::Result<Vec<(String, Option<Vec<i32>>)>> {
    topics
        .iter()
        .map(|text| match text.rsplit_once(':') {
            Some((topic, partitions)) => {
                let partitions = partitions
                    .split(',')
                    .map(|p| p.trim().parse::<i32>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| {
                        format!("--topic {text:?}: expected TOPIC or TOPIC:P,P,...")
                    })?;
                Ok((topic.to_string(), Some(partitions)))
            }
            None => Ok((text.clone(), None)),
        })
        .collect()
}

fn reset(
    connection: &Connection,
    group: &str,
    topic_args: &[String],
    all_topics: bool,
    target: &ResetTarget,
    execute: bool,
) -> anyhow::Result<()> {
    let consumer = connection.query_consumer(Some(group))?;
    let metadata = connection.metadata(&consumer, None)?;
    let selection = if all_topics {
        let every: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_string())
            .filter(|t| !t.starts_with("__"))
            .collect();
        let mut with_offsets: Vec<String> = committed(&consumer, connection, &every)?
            .into_keys()
            .map(|(topic, _)| topic)
            .collect();
        with_offsets.dedup();
        anyhow::ensure!(
            !with_offsets.is_empty(),
            "group {group} has no committed offsets: name the topics with --topic"
        );
        with_offsets.into_iter().map(|t| (t, None)).collect()
    } else {
        parse_topic_selection(topic_args)?
    };
    let topics: Vec<String> = selection.iter().map(|(t, _)| t.clone()).collect();
    let wanted_partition = |topic: &str, partition: i32| {
        selection
            .iter()
            .any(|(t, ps)| t == topic && ps.as_ref().is_none_or(|ps| ps.contains(&partition)))
    };
    for (topic, partitions) in &selection {
        let known = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && !t.partitions().is_empty());
        let Some(known) = known else {
            anyhow::bail!("unknown topic {topic}");
        };
        for p in partitions.iter().flatten() {
            anyhow::ensure!(
                known.partitions().iter().any(|kp| kp.id() == *p),
                "topic {topic} has no partition {p}"
            );
        }
    }
    let state = view(&consumer, group).map(|v| (v.state, v.members.len()));
    if let Ok((state, members)) = &state {
        anyhow::ensure!(
            *members == 0,
            "group {group} is {state} with {members} member(s): stop its consumers first"
        );
    }
    let current = committed(&consumer, connection, &topics)?;
    let mut new_offsets = TopicPartitionList::new();
    let mut rows = Vec::new();
    let mut capped = Vec::new();
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|n| n == t.name()))
    {
        for p in topic
            .partitions()
            .iter()
            .filter(|p| wanted_partition(topic.name(), p.id()))
        {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), p.id(), TIMEOUT)
                .with_context(|| format!("offsets of {}-{}", topic.name(), p.id()))?;
            let now = current.get(&(topic.name().to_string(), p.id())).copied();
            let wanted = if target.to_earliest {
                low
            } else if target.to_latest {
                high
            } else if let Some(offset) = target.to_offset {
                offset
            } else if let Some(ms) = target.to_datetime {
                let mut query = TopicPartitionList::new();
                query.add_partition_offset(topic.name(), p.id(), Offset::Offset(ms))?;
                let found = consumer
                    .offsets_for_times(query, TIMEOUT)
                    .context("cannot look offsets up by timestamp")?;
                match found
                    .find_partition(topic.name(), p.id())
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) if o >= 0 => o,
                    _ => high,
                }
            } else if let Some(shift) = target.shift_by {
                now.unwrap_or(low).saturating_add(shift)
            } else {
                unreachable!("clap requires one target")
            };
            let new = wanted.clamp(low, high);
            if new != wanted {
                capped.push(format!(
                    "{}-{}: {wanted} is outside the log ({low}..{high}), so {new}",
                    topic.name(),
                    p.id()
                ));
            }
            new_offsets.add_partition_offset(topic.name(), p.id(), Offset::Offset(new))?;
            rows.push(vec![
                topic.name().to_string(),
                p.id().to_string(),
                now.map_or("-".into(), |c| c.to_string()),
                new.to_string(),
            ]);
        }
    }
    print_table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows);
    for warning in &capped {
        eprintln!("warning: {warning}");
    }
    if !execute {
        crate::say!("plan only, nothing committed: add --execute to commit these offsets");
        return Ok(());
    }
    consumer
        .commit(&new_offsets, CommitMode::Sync)
        .with_context(|| format!("cannot commit offsets for group {group}"))?;
    crate::say!("offsets of group {group} reset");
    Ok(())
}
