//! `sluice bench`: benchmarks of the storage engine and the cleaner (in process), and load
//! generators against any Kafka-compatible cluster (`produce`, `consume`, `e2e`). Figures go to stdout; `--json` prints one JSON object per
//! measurement for scripts.

mod cleaner;
mod client;
mod log;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Storage engine alone, against a plain write() loop on the same disk.
    Log(log::LogBenchArgs),
    /// Log compaction: cleaner throughput, and produce throughput while it runs.
    Cleaner(cleaner::CleanerBenchArgs),
    /// Produce load against any Kafka-compatible cluster: msgs/s, MB/s, send-to-ack latency.
    #[command(
        after_help = "Examples:\n  sluice bench produce -b localhost:9092 --partitions 16 -s 1KiB -n 2000000 --acks all\n  sluice bench produce --rate 50000 --duration 30 --json"
    )]
    Produce(client::LoadArgs),
    /// Consume load: N consumers in one group read the topic from the beginning.
    #[command(
        after_help = "Example:\n  sluice bench consume --topic sluice-bench -n 2000000 --consumers 4"
    )]
    Consume(client::LoadArgs),
    /// End-to-end latency: stamped messages from producers to a consumer.
    #[command(after_help = "Example:\n  sluice bench e2e --rate 10000 --duration 20 --acks all")]
    E2e(client::LoadArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Log(args) => log::run(&args),
        BenchCommand::Cleaner(args) => cleaner::run(&args),
        BenchCommand::Produce(args) => client::run(&args, client::Mode::Produce),
        BenchCommand::Consume(args) => client::run(&args, client::Mode::Consume),
        BenchCommand::E2e(args) => client::run(&args, client::Mode::EndToEnd),
    }
}
