//! The `sluice` binary: every command a user runs. Owns argument parsing, logging setup and
//! human-readable output; the work itself lives in the library crates (`sluice-log`, ...).
//! Must not contain storage or protocol logic of its own.

/// `println!` for command output: a closed pipe (`sluice ... | head`) ends the process
/// quietly, as it does for other Unix tools, instead of panicking.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(err) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: cannot write to standard output: {err}");
            std::process::exit(1);
        }
    }};
}

mod bench;
mod broker;
mod client;
mod dev;
mod pipeline;
mod signals;
mod size;
mod stray;

use clap::{CommandFactory, Parser, Subcommand};

// The broker (also in the embedded pipeline) runs in this process: its guard against
// capacity bombs in the protocol codec must be the global allocator.
#[global_allocator]
static ALLOCATOR: sluice_broker::GuardedAllocator = sluice_broker::GuardedAllocator;

/// Sluice: a Kafka-compatible streaming platform.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (Kafka protocol on TCP, data in a local directory): a single node, or a
    /// node of a cluster (process.roles, controller.quorum.voters).
    Broker(broker::BrokerArgs),
    /// Development helpers: a local cluster in one command.
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Measure Sluice against this machine and other brokers.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Create, list, describe, alter and delete topics (any Kafka-compatible cluster).
    #[command(subcommand)]
    Topic(client::topic::TopicCommand),
    /// Write lines from standard input or a file to a topic.
    Produce(client::produce::ProduceArgs),
    /// Print a topic's messages.
    Consume(client::consume::ConsumeArgs),
    /// List, describe (with lag), reset and delete consumer groups.
    #[command(subcommand)]
    Group(client::group::GroupCommand),
    /// The cluster's id, controller and brokers; a broker's configuration.
    #[command(subcommand)]
    Cluster(client::cluster::ClusterCommand),
    /// Metrics ingestion gateway: HTTP POST → topic, 202 once durable.
    Ingest(pipeline::IngestArgs),
    /// Metrics sink: topic → PostgreSQL in a consumer group, invalid messages to a DLQ.
    Sink(pipeline::SinkCommandArgs),
    /// Gateway and sink in one process; with --embedded also the broker.
    Pipeline(pipeline::PipelineArgs),
    /// List or remove partition directories a broker set aside (not named by its metadata).
    StrayDirs(stray::StrayArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  sluice completions bash > /etc/bash_completion.d/sluice\n  sluice completions zsh > \"${fpath[1]}/_sluice\"\n  sluice completions fish > ~/.config/fish/completions/sluice.fish"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Broker(args) => broker::run(&args),
        Command::Dev(command) => dev::run(command),
        Command::Bench(command) => bench::run(command),
        Command::Topic(command) => client::topic::run(command),
        Command::Produce(args) => client::produce::run(&args),
        Command::Consume(args) => client::consume::run(&args),
        Command::Group(command) => client::group::run(command),
        Command::Cluster(command) => client::cluster::run(command),
        Command::Ingest(args) => pipeline::run_ingest(&args),
        Command::Sink(args) => pipeline::run_sink(&args),
        Command::Pipeline(args) => pipeline::run_pipeline(&args),
        Command::StrayDirs(args) => stray::run(&args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
            Ok(())
        }
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: logs piped to files or journald stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}
