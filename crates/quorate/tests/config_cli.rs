//! Runs the built `quorate` binary on the config fixtures: exit codes, error lines, JSON shape.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/tests/fixtures")
        .join(name)
}

fn quorate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .env_remove("QUORATE_CONFIG")
        .env_remove("QUORATE_STATE_DIR")
        .output()
        .expect("run quorate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tmp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quorate-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn validate_accepts_the_seed_and_real_world_configs() {
    for f in [
        "seed_v3.conf",
        "seed_v4.conf",
        "seed_v4_ipmi.conf",
        "two_node_full.conf",
        "real_world.conf",
        "crlf.conf",
    ] {
        let path = fixture(f);
        let o = quorate(&["config", "validate", path.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{f}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert!(text(&o.stdout).contains(": valid ("), "{f}");
    }
    // Warnings are printed compiler-style, with their hint.
    let o = quorate(&[
        "config",
        "validate",
        fixture("seed_v4.conf").to_str().unwrap(),
    ]);
    let out = text(&o.stdout);
    assert!(
        out.contains(
            "seed_v4.conf:5:3: warning: node \"an-node01.alteeve.com\" has no fence method"
        ),
        "{out}"
    );
    assert!(out.contains("\n  hint: add <fence>"), "{out}");
}

#[test]
fn validate_rejects_incomplete_and_defective_files_with_the_line() {
    let o = quorate(&[
        "config",
        "validate",
        fixture("seed_v2.conf").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("seed_v2.conf:2:1: error: incomplete configuration: no <clusternodes>"),
        "{out}"
    );

    let bad = tmp_file(
        "bad.conf",
        "<cluster name=\"c\" config_version=\"3\">\n<clusternodes>\n<clusternode name=\"a\" nodeid=\"1\"/>\n<clusternode name=\"b\" nodeid=\"1\"/>\n</clusternodes>\n<rm><service name=\"s\"\n recovery=\"explode\"/></rm>\n</cluster>\n",
    );
    let o = quorate(&["config", "validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.contains("bad.conf:4:23: error: duplicate nodeid=\"1\""),
        "{out}"
    );
    assert!(
        out.contains("bad.conf:7:2: error: recovery=\"explode\" is not a recovery policy"),
        "{out}"
    );
    assert!(out.contains("  hint: write recovery=\"restart\""), "{out}");
    assert!(out.contains("invalid (2 errors, "), "{out}");
}

#[test]
fn validate_json_shape() {
    let o = quorate(&[
        "config",
        "validate",
        "--json",
        fixture("seed_v1.conf").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 1);
    assert_eq!(v["warnings"], 0);
    let d = &v["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["line"], 2);
    assert_eq!(d["column"], 1);
    assert!(d["file"].as_str().unwrap().ends_with("seed_v1.conf"));
    assert!(d["message"].as_str().unwrap().contains("no <clusternodes>"));
    assert!(!d["hint"].as_str().unwrap().is_empty());

    let o = quorate(&[
        "config",
        "validate",
        "--json",
        fixture("seed_v4.conf").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["valid"].as_bool(), v["warnings"].as_u64()),
        (Some(true), Some(2))
    );
}

#[test]
fn validate_defaults_to_the_config_option_and_env() {
    let path = fixture("seed_v4.conf");
    let o = quorate(&["--config", path.to_str().unwrap(), "config", "validate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let o = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["config", "validate"])
        .env("QUORATE_CONFIG", fixture("seed_v1.conf"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("seed_v1.conf:2:1"));
}

#[test]
fn missing_file_is_exit_3_with_a_hint() {
    let o = quorate(&["config", "validate", "/nonexistent/cluster.conf"]);
    assert_eq!(o.status.code(), Some(3));
    let e = text(&o.stderr);
    assert!(e.contains("cannot read /nonexistent/cluster.conf"), "{e}");
    assert!(e.contains("hint: "), "{e}");
    let o = quorate(&["--config", "/nonexistent/cluster.conf", "config", "show"]);
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn bad_command_line_is_exit_2() {
    let o = quorate(&["config", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn show_prints_the_effective_model() {
    let path = fixture("two_node_full.conf");
    let o = quorate(&["--config", path.to_str().unwrap(), "config", "show"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("cluster an-cluster (config_version 7)"),
        "{out}"
    );
    assert!(
        out.contains("token                     10000 ms (default)"),
        "{out}"
    );
    assert!(out.contains("rrp_mode                  passive\n"), "{out}");
    assert!(
        out.contains("start order             ip 192.168.1.100/24 -> script httpd"),
        "{out}"
    );
    assert!(
        out.contains("migrate                 live (default)"),
        "{out}"
    );
    assert!(!out.contains("secret"), "passwords are never shown");

    let o = quorate(&[
        "--config",
        path.to_str().unwrap(),
        "config",
        "show",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "an-cluster");
    assert_eq!(v["totem"]["token"]["value"], 10000);
    assert_eq!(v["totem"]["token"]["default"], true);
    assert_eq!(v["quorum"]["quorum"], 1);
    assert_eq!(
        v["nodes"][0]["fence"][1]["devices"][0]["attrs"]["port"],
        "01"
    );
    assert_eq!(v["fence_devices"][0]["attrs"]["passwd"], "(hidden)");
    assert_eq!(v["rm"]["services"][0]["recovery"]["value"], "relocate");
    // Round trip: the JSON parses back into the model and prints identically.
    let back: config::ClusterConf = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), v);

    // An invalid file: errors on stderr, exit 1, nothing on stdout.
    let o = quorate(&[
        "--config",
        fixture("seed_v1.conf").to_str().unwrap(),
        "config",
        "show",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(text(&o.stderr).contains("seed_v1.conf:2:1: error:"));
}

#[test]
fn diff_shows_a_bump_and_refuses_a_non_increasing_version() {
    let (old, new) = (fixture("seed_v4.conf"), fixture("two_node_full.conf"));
    let o = quorate(&[
        "config",
        "diff",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("config_version 4 -> 7: "), "{out}");
    assert!(out.contains("+ Services service:www"), "{out}");
    assert!(out.contains("+ Fencing fencedevice fence_ipmi_3"), "{out}");
    assert!(
        out.contains(
            "~ Fencing an-node01.alteeve.com.fence: none -> ipmi[fence_ipmi_3 action=reboot]"
        ),
        "{out}"
    );

    let o = quorate(&[
        "config",
        "diff",
        "--json",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["old_version"].as_u64(), v["new_version"].as_u64()),
        (Some(4), Some(7))
    );
    let changes = v["changes"].as_array().unwrap();
    assert!(changes
        .iter()
        .any(|c| c["area"] == "vms" && c["kind"] == "added" && c["subject"] == "vm:vm01-dev"));

    let o = quorate(&[
        "config",
        "diff",
        new.to_str().unwrap(),
        old.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("new config_version 4 is not greater than the old one (7)"),
        "{e}"
    );
    assert!(
        e.contains("hint: raise config_version in the new file to at least 8"),
        "{e}"
    );
    let o = quorate(&[
        "config",
        "diff",
        old.to_str().unwrap(),
        old.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn local_node_finds_the_node_on_a_local_address() {
    // Loopback exists on every Linux machine (and in every network namespace).
    let conf = tmp_file(
        "local.conf",
        "<cluster name=\"c\" config_version=\"1\"><clusternodes><clusternode name=\"192.0.2.250\" nodeid=\"1\"/><clusternode name=\"127.0.0.1\" nodeid=\"2\"/></clusternodes></cluster>",
    );
    let o = quorate(&[
        "--config",
        conf.to_str().unwrap(),
        "config",
        "local-node",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "127.0.0.1");
    assert_eq!(v["nodeid"], 2);

    let conf = tmp_file(
        "remote.conf",
        "<cluster name=\"c\" config_version=\"1\"><clusternodes><clusternode name=\"192.0.2.250\" nodeid=\"1\"/></clusternodes></cluster>",
    );
    let o = quorate(&["--config", conf.to_str().unwrap(), "config", "local-node"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("no <clusternode> resolves to an address of this machine"),
        "{e}"
    );
    assert!(e.contains("127.0.0.1"), "local addresses are listed: {e}");
    assert!(e.contains("192.0.2.250 -> 192.0.2.250"), "{e}");
}

#[test]
fn validate_reads_standard_input() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["config", "validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"<cluster name=\"c\" config_version=\"1\">\n<clusternodes>\n<clusternode name=\"a\" nodeid=\"x\"/>\n</clusternodes></cluster>")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains("<stdin>:3:23: error: nodeid=\"x\" is not a positive integer"),
        "{}",
        text(&o.stdout)
    );
}
