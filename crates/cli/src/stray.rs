//! `sluice stray-dirs`: list, or remove, the partition directories a broker set aside at
//! startup because its metadata does not name them (`<topic>-<partition>.<id>-stray`).
//! They are never deleted by the broker: a damaged or missing metadata log must not cost
//! the data. Works on the data directory of a stopped broker.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  sluice stray-dirs --data-dir ./data\n  sluice stray-dirs --data-dir ./data --remove"
)]
pub struct StrayArgs {
    /// The broker's data directory (`log.dirs`).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Remove them (the broker must be stopped).
    #[arg(long)]
    remove: bool,
}

fn size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}

pub fn run(args: &StrayArgs) -> anyhow::Result<()> {
    if !args.data_dir.is_dir() {
        bail!("{} is not a directory", args.data_dir.display());
    }
    let found = sluice_log::stray_dirs(&args.data_dir);
    if found.is_empty() {
        say!(
            "no stray partition directories in {}",
            args.data_dir.display()
        );
        return Ok(());
    }
    if !args.remove {
        for dir in &found {
            say!("{}\t{} bytes", dir.display(), size(dir));
        }
        return Ok(());
    }
    // The broker holds the data directory's lock while it runs.
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(args.data_dir.join(".lock"))
        .context("cannot open the data directory's lock")?;
    if lock.try_lock().is_err() {
        bail!(
            "a broker is using {}: stop it first",
            args.data_dir.display()
        );
    }
    for dir in &found {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        say!("removed {}", dir.display());
    }
    Ok(())
}
