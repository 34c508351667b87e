//! `quorate config validate|show|diff|local-node`.

use super::{err, out};
use crate::cli::{ConfigCmd, EXIT_FAIL, EXIT_IO, EXIT_OK};
use config::{ClusterConf, Diagnostic, Parsed};
use serde::Serialize;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;

/// Runs one `config` subcommand.
pub fn run(config_path: &Path, cmd: ConfigCmd) -> u8 {
    match cmd {
        ConfigCmd::Validate { file, json } => {
            validate(file.as_deref().unwrap_or(config_path), json)
        }
        ConfigCmd::Show { json } => show(config_path, json),
        ConfigCmd::Diff { old, new, json } => diff(&old, &new, json),
        ConfigCmd::LocalNode { json } => local_node(config_path, json),
        // Both talk to a running node: dispatched in `cmd::run`.
        ConfigCmd::Push { .. } | ConfigCmd::Status { .. } => crate::cli::EXIT_FAIL,
    }
}

fn load(path: &Path) -> Result<Parsed, u8> {
    if path == Path::new("-") {
        use std::io::Read;
        let mut text = String::new();
        let limit = config::parse::MAX_FILE_BYTES as u64 + 1;
        return match std::io::stdin().take(limit).read_to_string(&mut text) {
            Ok(_) => Ok(config::parse("<stdin>", &text)),
            Err(e) => {
                err(&format!("quorate: error: cannot read standard input: {e}\n  hint: pipe UTF-8 cluster.conf text into it\n"));
                Err(EXIT_IO)
            }
        };
    }
    match config::load_file(path) {
        Ok(p) => {
            tracing::debug!(file = %path.display(), diagnostics = p.diagnostics.len(), "parsed");
            Ok(p)
        }
        Err(e) => {
            err(&format!(
                "quorate: error: {e}\n  hint: check the path, or pass --config FILE (or set QUORATE_CONFIG)\n"
            ));
            Err(EXIT_IO)
        }
    }
}

fn diagnostics_text(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("{d}\n")).collect()
}

/// Loads a file that must be valid: diagnostics to stderr, the model or an exit code.
fn load_valid(path: &Path) -> Result<ClusterConf, u8> {
    let p = load(path)?;
    err(&diagnostics_text(&p.diagnostics));
    match p.config {
        Some(c) => Ok(c),
        None => {
            let n = p.errors().count();
            err(&format!(
                "quorate: {} is not valid ({n} error{}); run `quorate config validate {}` after fixing it\n",
                path.display(),
                if n == 1 { "" } else { "s" },
                path.display()
            ));
            Err(EXIT_FAIL)
        }
    }
}

#[derive(Serialize)]
struct ValidateReport<'a> {
    file: String,
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: &'a [Diagnostic],
}

/// How a file is named in messages.
fn shown(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

fn validate(path: &Path, json: bool) -> u8 {
    let p = match load(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (errors, warnings) = (p.errors().count(), p.warnings().count());
    if json {
        let report = ValidateReport {
            file: shown(path),
            valid: p.is_valid(),
            errors,
            warnings,
            diagnostics: &p.diagnostics,
        };
        out(&format!("{}\n", to_json(&report)));
    } else {
        out(&diagnostics_text(&p.diagnostics));
        let verdict = if p.is_valid() { "valid" } else { "invalid" };
        out(&format!(
            "{}: {verdict} ({errors} error{}, {warnings} warning{})\n",
            shown(path),
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        ));
    }
    if p.is_valid() {
        EXIT_OK
    } else {
        EXIT_FAIL
    }
}

fn show(path: &Path, json: bool) -> u8 {
    let c = match load_valid(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if json {
        out(&format!("{}\n", to_json(&c)));
    } else {
        out(&config::render_text(&c));
    }
    EXIT_OK
}

fn diff(old: &Path, new: &Path, json: bool) -> u8 {
    let (o, n) = match (load_valid(old), load_valid(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(a), Err(b)) => return a.max(b),
        (Err(a), _) | (_, Err(a)) => return a,
    };
    let d = match config::diff(&o, &n) {
        Ok(d) => d,
        Err(e) => {
            err(&format!("quorate: error: {e}\n  hint: {}\n", e.hint()));
            return EXIT_FAIL;
        }
    };
    if json {
        out(&format!("{}\n", to_json(&d)));
    } else {
        let mut s = format!(
            "config_version {} -> {}: {} change{}\n",
            d.old_version,
            d.new_version,
            d.changes.len(),
            if d.changes.len() == 1 { "" } else { "s" }
        );
        for c in &d.changes {
            s.push_str(&format!("  {c}\n"));
        }
        out(&s);
    }
    EXIT_OK
}

/// This machine's interface addresses.
fn local_addresses() -> std::io::Result<Vec<IpAddr>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| i.ip())
        .collect())
}

/// The system resolver (/etc/hosts, DNS), as cman uses it.
fn resolve(name: &str) -> Vec<IpAddr> {
    match (name, 0u16).to_socket_addrs() {
        Ok(it) => it.map(|a| a.ip()).collect(),
        Err(e) => {
            tracing::debug!(name, error = %e, "cannot resolve");
            Vec::new()
        }
    }
}

fn local_node(path: &Path, json: bool) -> u8 {
    let c = match load_valid(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let addrs = match local_addresses() {
        Ok(a) => a,
        Err(e) => {
            err(&format!(
                "quorate: error: cannot list this machine's addresses: {e}\n"
            ));
            return EXIT_IO;
        }
    };
    match config::identify_local_node(&c, &addrs, resolve) {
        Ok(n) => {
            if json {
                out(&format!(
                    "{}\n",
                    to_json(&serde_json::json!({
                        "name": n.name,
                        "nodeid": n.nodeid,
                        "votes": n.votes.value,
                    }))
                ));
            } else {
                out(&format!("{} (nodeid {})\n", n.name, n.nodeid));
            }
            EXIT_OK
        }
        Err(e) => {
            err(&format!("quorate: error: {e}\n  hint: {}\n", e.hint()));
            EXIT_FAIL
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Serializing our own plain data types cannot fail.
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
