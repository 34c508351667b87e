//! The clap command tree. Later layers add their subcommands here and a file under `cmd/`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the command ran but the answer is "no" (invalid config, refused diff, node not found).
pub const EXIT_FAIL: u8 = 1;
// Exit status 2: bad command line (clap exits with it itself).
/// Exit status: a file could not be read.
pub const EXIT_IO: u8 = 3;

/// quorate: a high-availability cluster suite (cman, fenced, rgmanager, DRBD and VMs, in one binary).
#[derive(Debug, Parser)]
#[command(
    name = "quorate",
    version,
    about,
    after_help = "Exit status: 0 done; 1 the answer is no (invalid config, refused diff, ...); 2 bad command line; 3 a file could not be read."
)]
pub struct Cli {
    /// The cluster configuration file.
    #[arg(
        long,
        global = true,
        env = "QUORATE_CONFIG",
        value_name = "FILE",
        default_value = config::DEFAULT_PATH
    )]
    pub config: PathBuf,

    /// The node's state directory (its admin socket and on-disk state live there).
    #[arg(
        long,
        global = true,
        env = "QUORATE_STATE_DIR",
        value_name = "DIR",
        default_value = "/var/lib/quorate"
    )]
    pub state_dir: PathBuf,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check, explain and compare cluster.conf files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run this machine's cluster node in the foreground (logs to stderr; SIGTERM leaves cleanly).
    Node {
        /// Which <clusternode> this is (default: the one whose name resolves to a local address).
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
    },
    /// Members, quorum and services, as clustat shows them.
    Status {
        /// Refresh every SECONDS until interrupted.
        #[arg(short = 'i', long, value_name = "SECONDS")]
        interval: Option<u64>,
        /// Print {cluster_name, config_version, quorate, members[{name, nodeid, online, local}], services[{name, kind, state, owner, last_owner, restarts, ...}], events[]} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 when this node's partition is quorate, 1 when not (clustat -Q).
    Quorum {
        /// Print {quorate, reason} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Membership and votes, as cman_tool shows them.
    #[command(subcommand)]
    Cman(CmanCmd),
    /// The totem ring: members, ring state, counters.
    #[command(subcommand)]
    Totem(TotemCmd),
    /// Fence a node, acknowledge a manual fence, unfence, or show the fence domain.
    Fence(FenceArgs),
    /// Enable, disable, relocate, restart, stop, freeze, unfreeze or migrate a service (clusvcadm).
    Svc(SvcCmd),
    /// Replicated volumes (DRBD's role): status, and the drbdadm commands an operator needs.
    #[command(subcommand)]
    Replica(ReplicaCmd),
    /// Write a new random cluster key (corosync's authkey) to FILE, mode 0400.
    Keygen {
        /// Where to write it; refuses to overwrite.
        file: PathBuf,
    },
    /// Run the virtual power switch used by the demo and the multi-node tests.
    PowerSwitch(powerswitch::PowerSwitchArgs),
    /// The seed's two-node cluster on this machine, narrated: a service, a node crash, fencing, recovery (needs root).
    Demo {
        /// Print nothing; only the exit status says whether the cluster behaved.
        #[arg(long)]
        quiet: bool,
        /// Where to keep the demo's config and node logs (default: a new dir under /tmp).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Prepare or inspect a quorum disk (mkqdisk).
    #[command(subcommand)]
    Qdisk(QdiskCmd),
    /// Benchmarks that print a table (medians; the machine is shared).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Run the deterministic simulator: exit 0 when every seed passes, else print the replay command and exit 1.
    Sim {
        /// Which layer: totem (membership and total order) or cluster (whole
        /// node stacks: quorum, fencing and services, with simulated power
        /// and processes).
        layer: String,
        /// How many seeds, starting at --seed.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Nodes per cluster (default: chosen by each seed, 3 to 7 for totem,
        /// 2 to 5 for cluster).
        #[arg(long)]
        nodes: Option<usize>,
    },
}

/// `quorate cman ...`
#[derive(Debug, Subcommand)]
pub enum CmanCmd {
    /// Config version, cluster name and id, membership state, votes and quorum (cman_tool status).
    Status {
        /// Print the node's quorum status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every configured node: id, status (M member, X not), votes, joined time, name.
    Nodes {
        /// Print [{name, nodeid, online, votes, joined, addresses}] as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set expected votes on every member (cman_tool expected -e); refused if it would leave the cluster inquorate.
    Expected {
        /// The new expected votes.
        votes: u32,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Leave the cluster cleanly: services move away first, and the node is not fenced.
    Leave {
        /// Also lower the expected votes by this node's votes.
        #[arg(long)]
        remove: bool,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `quorate replica ...` (drbdadm / drbd-overview).
#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// Role, peer role, connection, disks, resync progress (rate, ETA), out-of-sync bytes, split brain.
    Status {
        /// One volume (default: every volume of this node).
        name: Option<String>,
        /// Refresh every SECONDS until interrupted.
        #[arg(short = 'i', long, value_name = "SECONDS")]
        interval: Option<u64>,
        /// Print {replicas: [{name, role, peer_role, conn, disk, peer_disk, out_of_sync_bytes, resync, frozen, split_brain, ...}]} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Promote this node (drbdadm primary); waits for a lost peer to be fenced.
    Primary {
        /// The volume.
        name: String,
        /// Promote a disk that is not UpToDate, without fencing the peer (the very first primary of a volume with data, or the last copy left).
        #[arg(long)]
        force: bool,
        /// Print the volume's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Demote this node (drbdadm secondary); stops its NBD export.
    Secondary {
        /// The volume.
        name: String,
        /// Print the volume's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connect to the peer again (drbdadm connect).
    Connect {
        /// The volume.
        name: String,
        /// Print the volume's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop the replication link and stay StandAlone (drbdadm disconnect).
    Disconnect {
        /// The volume.
        name: String,
        /// Disconnect even though the primary will freeze and fence its peer (resource-and-stonith).
        #[arg(long)]
        force: bool,
        /// Print the volume's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare both sides by checksums; mismatches are marked out of sync (drbdadm verify).
    Verify {
        /// The volume.
        name: String,
        /// Print the volume's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make this node the split-brain victim and reconnect: its changes are overwritten by the peer's (drbdadm connect --discard-my-data).
    DiscardMyData {
        /// The volume.
        name: String,
        /// Print the volume's status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `quorate totem ...`
#[derive(Debug, Subcommand)]
pub enum TotemCmd {
    /// Ring id, members ({nodeid, name} in JSON), ring states and counters.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `quorate fence NODE` or `quorate fence status|ack|unfence`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FenceArgs {
    /// The node to fence now (fence_node).
    pub node: Option<String>,
    /// Wait up to SECONDS for the node to be fenced (0: do not wait).
    #[arg(long, default_value_t = 120)]
    pub wait: u64,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Option<FenceSub>,
}

/// `quorate fence ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum FenceSub {
    /// Victims, tries, last error, and what is blocked waiting on fencing.
    Status {
        /// Print the fence domain's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Declare NODE fenced after powering it off by hand (fence_ack_manual).
    Ack {
        /// The node.
        node: String,
        /// Confirm that NODE is really off.
        #[arg(long = "yes-it-is-off")]
        yes: bool,
    },
    /// Run NODE's <unfence> devices (fence_node -U).
    Unfence {
        /// The node.
        node: String,
    },
}

/// What `quorate fence` does, resolved.
#[derive(Debug)]
pub enum FenceCmd {
    /// Show the fence domain.
    Status {
        /// JSON.
        json: bool,
    },
    /// Fence a node.
    Node {
        /// The node.
        node: String,
        /// Seconds to wait.
        wait: u64,
    },
    /// Manual acknowledgement.
    Ack {
        /// The node.
        node: String,
        /// Confirmed.
        yes: bool,
    },
    /// Unfence.
    Unfence {
        /// The node.
        node: String,
    },
}

/// `quorate svc ACTION NAME [-m NODE]`
#[derive(Debug, clap::Args)]
pub struct SvcCmd {
    /// What to do.
    #[command(subcommand)]
    pub action: SvcAction,
    /// Give up waiting for the outcome after SECONDS.
    #[arg(long, global = true, default_value_t = 300)]
    pub timeout: u64,
    /// Submit and return at once.
    #[arg(long, global = true)]
    pub no_wait: bool,
}

/// clusvcadm's operations.
#[derive(Debug, Subcommand)]
pub enum SvcAction {
    /// Start it (clusvcadm -e), on -m NODE if given.
    Enable {
        /// Service or vm name.
        name: String,
        /// Target node.
        #[arg(short = 'm', long = "member")]
        member: Option<String>,
    },
    /// Stop it and keep it stopped (clusvcadm -d).
    Disable {
        /// Service or vm name.
        name: String,
    },
    /// Move it to -m NODE or the best other node (clusvcadm -r).
    Relocate {
        /// Service or vm name.
        name: String,
        /// Target node.
        #[arg(short = 'm', long = "member")]
        member: Option<String>,
    },
    /// Stop and start it in place (clusvcadm -R).
    Restart {
        /// Service or vm name.
        name: String,
    },
    /// Stop it until the next membership change or enable (clusvcadm -s).
    Stop {
        /// Service or vm name.
        name: String,
    },
    /// No status checks, no recovery, no moves (clusvcadm -Z).
    Freeze {
        /// Service or vm name.
        name: String,
    },
    /// Undo freeze (clusvcadm -U).
    Unfreeze {
        /// Service or vm name.
        name: String,
    },
    /// Live-migrate a vm to -m NODE (clusvcadm -M).
    Migrate {
        /// Vm name.
        name: String,
        /// Target node.
        #[arg(short = 'm', long = "member")]
        member: String,
    },
}

/// `quorate config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check a cluster.conf: exit 0 when valid (warnings are printed), 1 with the errors otherwise.
    Validate {
        /// The file to check (default: --config; `-` reads standard input).
        file: Option<PathBuf>,
        /// Print {file, valid, errors, warnings, diagnostics[]} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration, every default applied and marked "(default)".
    Show {
        /// Print the model as JSON (settings are {"value", "default"}; secrets are hidden).
        #[arg(long)]
        json: bool,
    },
    /// Show what NEW changes relative to OLD; refuses a NEW whose config_version is not greater.
    Diff {
        /// The configuration in force.
        old: PathBuf,
        /// The proposed configuration.
        new: PathBuf,
        /// Print {old_version, new_version, changes[{area, kind, subject, detail}]} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Distribute a new config_version to every member (ccs_tool update / cman_tool version -r): validated, then adopted by all members at once.
    Push {
        /// The new cluster.conf (default: --config).
        file: Option<PathBuf>,
        /// Print {applied, config_version} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The config version each member runs, whether they agree, and hand edits (drift).
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Say which <clusternode> this machine is: the one whose name resolves to a local address.
    LocalNode {
        /// Print {name, nodeid, votes} as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `quorate bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// SIGKILL of a service's node to the service running on a survivor, 3 nodes in namespaces (needs root).
    Failover {
        /// Runs per token timeout.
        #[arg(long, default_value_t = 10)]
        runs: u32,
        /// Token timeouts to measure, in ms.
        #[arg(long, value_delimiter = ',', default_values_t = [300u32, 1000])]
        tokens: Vec<u32>,
    },
    /// A node's death to fence success, 3 nodes in namespaces, fenced through the power switch (needs root).
    Fence {
        /// Runs per token timeout.
        #[arg(long, default_value_t = 10)]
        runs: u32,
        /// Token timeouts to measure, in ms.
        #[arg(long, value_delimiter = ',', default_values_t = [300u32, 1000])]
        tokens: Vec<u32>,
    },
    /// Ordered 1 KiB messages/s and latency on 2, 3 and 5 nodes, and failure detection at token 300 and 1000 ms (needs root).
    Totem {
        /// Messages per throughput run.
        #[arg(long, default_value_t = 20000)]
        count: u64,
        /// Detection runs per token timeout.
        #[arg(long, default_value_t = 10)]
        runs: u32,
    },
    /// The tiny guest: live migration time and downtime, crash to running.
    Vm {
        /// Migrations to measure (default: the vm crate's).
        #[arg(long)]
        runs: Option<usize>,
    },
    /// The replicated volume over NBD against no peer, nbdkit and the raw file.
    Replica {
        /// Scratch directory (default: under /tmp; use /dev/shm to take the disk out).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// `quorate qdisk ...`
#[derive(Debug, Subcommand)]
pub enum QdiskCmd {
    /// Write an empty quorum disk layout (mkqdisk -c): run once, from one node.
    Format {
        /// The shared device or file.
        device: PathBuf,
        /// The cluster name (must match <cluster name>).
        #[arg(long)]
        cluster: String,
        /// A label (mkqdisk -l).
        #[arg(long, default_value = "quorate")]
        label: String,
    },
    /// Show the disk's header and every node's status block (mkqdisk -L).
    List {
        /// The shared device or file.
        device: PathBuf,
    },
}
