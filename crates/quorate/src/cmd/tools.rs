//! Small tools: `keygen`, `power-switch`, `sim`.

use super::{err, out};
use crate::cli::{EXIT_FAIL, EXIT_IO, EXIT_OK};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `quorate keygen FILE`: a new random cluster key, mode 0400, never overwriting.
pub fn keygen(file: &Path) -> u8 {
    let mut random = [0u8; totem::crypto::AUTHKEY_LEN];
    if let Err(e) = getrandom::getrandom(&mut random) {
        err(&format!(
            "quorate: error: the operating system gave no random bytes: {e}\n"
        ));
        return EXIT_IO;
    }
    let key = totem::generate_authkey(random);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(file);
    match f.and_then(|mut f| f.write_all(&key).and_then(|_| f.sync_all())) {
        Ok(()) => {
            out(&format!(
                "wrote a {}-byte cluster key to {}\ncopy it to every node (same path), then set keyfile=\"{}\" in <totem> of cluster.conf\n",
                key.len(),
                file.display(),
                file.display()
            ));
            EXIT_OK
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            err(&format!(
                "quorate: refused: {} exists; a new key would cut this node off from the others\n  hint: remove it first if you really mean to replace the key on every node\n",
                file.display()
            ));
            EXIT_FAIL
        }
        Err(e) => {
            err(&format!(
                "quorate: error: cannot write {}: {e}\n",
                file.display()
            ));
            EXIT_IO
        }
    }
}

/// `quorate power-switch ...`.
pub fn power_switch(args: powerswitch::PowerSwitchArgs) -> u8 {
    let Some(rt) = super::runtime() else {
        return EXIT_FAIL;
    };
    match rt.block_on(powerswitch::run_server(args)) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            err(&format!("quorate power-switch: {e}\n"));
            EXIT_FAIL
        }
    }
}

/// `quorate sim totem|cluster --seeds N [--seed S] [--nodes K]`.
pub fn sim(layer: &str, seeds: u64, first: u64, nodes: Option<usize>) -> u8 {
    let run = |seed: u64| -> Result<(), String> {
        match layer {
            "totem" => sim::totem::run(sim::totem::SimOptions::from_seed(seed, nodes))
                .map(|_| ())
                .map_err(|f| f.to_string()),
            _ => sim::cluster::run(sim::cluster::ClusterOptions::from_seed(seed, nodes))
                .map(|_| ())
                .map_err(|f| f.to_string()),
        }
    };
    if layer != "totem" && layer != "cluster" {
        err(&format!(
            "quorate: unknown simulator layer {layer:?}\n  hint: the simulator runs: totem (membership and order), cluster (whole node stacks: quorum, fencing, services)\n"
        ));
        return 2;
    }
    let started = std::time::Instant::now();
    for seed in first..first.saturating_add(seeds) {
        if let Err(f) = run(seed) {
            // The failure names the replay command itself.
            err(&format!("{f}\n"));
            return EXIT_FAIL;
        }
    }
    out(&format!(
        "sim {layer}: {seeds} seeds passed (seeds {first}..{}) in {:.1} s\n",
        first.saturating_add(seeds),
        started.elapsed().as_secs_f64()
    ));
    EXIT_OK
}

/// `quorate qdisk format|list`.
pub fn qdisk(cmd: crate::cli::QdiskCmd) -> u8 {
    match cmd {
        crate::cli::QdiskCmd::Format {
            device,
            cluster,
            label,
        } => match qdisk::format(&device, &cluster, &label) {
            Ok(()) => {
                out(&format!(
                    "{} is a quorum disk for cluster {cluster} (label {label})\n",
                    device.display()
                ));
                EXIT_OK
            }
            Err(e) => {
                err(&format!("quorate: error: {e}\n"));
                EXIT_FAIL
            }
        },
        crate::cli::QdiskCmd::List { device } => match qdisk::list(&device) {
            Ok(l) => {
                out(&format!("{l:#?}\n"));
                EXIT_OK
            }
            Err(e) => {
                err(&format!("quorate: error: {e}\n"));
                EXIT_FAIL
            }
        },
    }
}
