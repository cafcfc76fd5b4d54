//! `sluice bench`: benchmarks. Figures go to stdout; `--json` prints one JSON object per
//! measurement for scripts.

mod log;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Storage engine alone, against a plain write() loop on the same disk.
    Log(log::LogBenchArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Log(args) => log::run(&args),
    }
}
