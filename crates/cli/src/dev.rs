//! `sluice dev cluster`: a local cluster of combined nodes (broker and controller) on
//! loopback, each a `sluice broker` child process with its own data directory, started with
//! the configuration a user would otherwise write three times. It prints the bootstrap
//! string, reports nodes that exit (the others keep running: killing one is how failover is
//! tried), and stops every node (SIGTERM: controlled shutdown) on SIGINT or SIGTERM. A node
//! killed by hand is restarted with the command `--print-commands` shows.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

#[derive(Debug, clap::Subcommand)]
pub enum DevCommand {
    /// Start a local cluster of combined nodes (broker + metadata quorum voter) on loopback.
    #[command(
        after_help = "Examples:\n  sluice dev cluster --nodes 3 --data-dir ./cluster\n  sluice dev cluster --nodes 3 --brokers 1   # and a broker-only node 4\n  sluice dev cluster --nodes 3 --port 19092 --print-commands   # only print the three commands\n\nNode i (1..=N) serves clients on 127.0.0.1:PORT+i-1 and its quorum peers on\n127.0.0.1:PORT+100+i-1; its data lives in DATA_DIR/node-i and its log in DATA_DIR/node-i.log.\nA restart with the same flags finds every node's data again."
    )]
    Cluster(ClusterArgs),
}

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// How many nodes (each a broker and a voter of the metadata quorum).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Broker-only nodes beside them (`process.roles=broker`: they follow the quorum without
    /// voting); needs at least two nodes.
    #[arg(long, default_value_t = 0)]
    brokers: u16,
    /// Where the nodes keep their data: one directory per node.
    #[arg(long, default_value = "./cluster")]
    data_dir: PathBuf,
    /// The first node's client port; the others follow it.
    #[arg(long, default_value_t = 9092)]
    port: u16,
    /// Print the commands that start the nodes one by one, and exit.
    #[arg(long)]
    print_commands: bool,
    /// Any broker property for every node, KEY=VALUE; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Most nodes a dev cluster runs (each is a process with its own logs and quorum vote).
const MAX_NODES: u16 = 9;
/// Controller ports are this far above client ports.
const CONTROLLER_PORT_OFFSET: u16 = 100;

pub fn run(command: DevCommand) -> anyhow::Result<()> {
    match command {
        DevCommand::Cluster(args) => cluster(&args),
    }
}

/// One node's `sluice broker` arguments.
fn node_args(args: &ClusterArgs, node: u16) -> anyhow::Result<Vec<String>> {
    let client = |n: u16| args.port.checked_add(n - 1);
    let controller = |n: u16| client(n).and_then(|p| p.checked_add(CONTROLLER_PORT_OFFSET));
    let (Some(port), Some(quorum_port)) = (client(node), controller(node)) else {
        bail!(
            "--port {} leaves no room for {} nodes",
            args.port,
            args.nodes + args.brokers
        );
    };
    let voters = (1..=args.nodes)
        .map(|n| format!("{n}@127.0.0.1:{}", controller(n).unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(",");
    let data_dir = args
        .data_dir
        .join(format!("node-{node}"))
        .display()
        .to_string();
    if node > args.nodes {
        // A broker-only node: no vote, no controller listener.
        let mut out: Vec<String> = [
            "broker",
            "--node-id",
            &node.to_string(),
            "--data-dir",
            &data_dir,
            "--set",
            "process.roles=broker",
            "--set",
            &format!("controller.quorum.voters={voters}"),
            "--set",
            &format!("listeners=PLAINTEXT://127.0.0.1:{port}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for pair in &args.set {
            out.push("--set".into());
            out.push(pair.clone());
        }
        return Ok(out);
    }
    let mut out = vec![
        "broker".to_string(),
        "--node-id".into(),
        node.to_string(),
        "--data-dir".into(),
        data_dir,
        "--set".into(),
        "process.roles=broker,controller".into(),
        "--set".into(),
        format!("controller.quorum.voters={voters}"),
        "--set".into(),
        format!("listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{quorum_port}"),
        "--set".into(),
        format!("advertised.listeners=PLAINTEXT://127.0.0.1:{port}"),
        "--set".into(),
        "controller.listener.names=CONTROLLER".into(),
    ];
    for pair in &args.set {
        out.push("--set".into());
        out.push(pair.clone());
    }
    Ok(out)
}

fn bootstrap(args: &ClusterArgs) -> String {
    (0..args.nodes + args.brokers)
        .map(|i| format!("127.0.0.1:{}", u32::from(args.port) + u32::from(i)))
        .collect::<Vec<_>>()
        .join(",")
}

fn cluster(args: &ClusterArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes + args.brokers > MAX_NODES {
        bail!(
            "--nodes {} --brokers {}: give 1 to {MAX_NODES} nodes in all",
            args.nodes,
            args.brokers
        );
    }
    if args.brokers > 0 && args.nodes < 2 {
        bail!("--brokers needs --nodes 2 or more: broker-only nodes follow a quorum of several");
    }
    let commands = (1..=args.nodes + args.brokers)
        .map(|node| node_args(args, node))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if args.print_commands {
        for command in &commands {
            crate::say!("sluice {}", shell_words(command));
        }
        return Ok(());
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let exe = std::env::current_exe().context("finding the sluice binary")?;
    let mut nodes = Vec::new();
    for (node, command) in (1..=args.nodes + args.brokers).zip(&commands) {
        let log = node_log(&args.data_dir, node);
        let file = std::fs::File::create(&log)
            .with_context(|| format!("creating the node's log {}", log.display()))?;
        let child = Command::new(&exe)
            .args(command)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting node {node}"))?;
        nodes.push((node, child));
    }
    crate::say!(
        "{} nodes and {} broker-only node(s) starting; logs in {}/node-N.log",
        args.nodes,
        args.brokers,
        args.data_dir.display()
    );
    crate::say!("bootstrap servers: {}", bootstrap(args));
    crate::say!(
        "e.g. sluice cluster describe --bootstrap-server {}",
        bootstrap(args)
    );
    crate::say!("Ctrl-C stops every node.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut signals = crate::signals::ShutdownSignals::install()?;
        tokio::select! {
            () = signals.recv() => {}
            () = watch_nodes(&mut nodes, &args.data_dir) => {}
        }
        Ok::<_, anyhow::Error>(())
    })?;
    stop_all(&mut nodes);
    Ok(())
}

/// Reports each node that exits by itself (a failed start, a crash, a kill while trying
/// failover): the others keep running. Resolves when none is left.
async fn watch_nodes(nodes: &mut [(u16, Child)], dir: &Path) {
    let mut running = nodes.len();
    let mut reported = vec![false; nodes.len()];
    while running > 0 {
        for (i, (node, child)) in nodes.iter_mut().enumerate() {
            if !reported[i]
                && let Ok(Some(status)) = child.try_wait()
            {
                reported[i] = true;
                running -= 1;
                eprintln!(
                    "node {node} exited ({status}); see {}",
                    node_log(dir, *node).display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node_log(dir: &Path, node: u16) -> PathBuf {
    dir.join(format!("node-{node}.log"))
}

/// SIGTERM to every node (each hands over its leaderships and stops cleanly), then waits;
/// a node still running after 30 s is killed.
fn stop_all(nodes: &mut [(u16, Child)]) {
    use rustix::process::{Pid, Signal, kill_process};
    for (_, child) in nodes.iter() {
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = kill_process(pid, Signal::TERM);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (node, child) in nodes.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if std::time::Instant::now() > deadline => {
                    eprintln!("node {node} did not stop in time: killed");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// Arguments as a shell line (quoted where needed).
fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
