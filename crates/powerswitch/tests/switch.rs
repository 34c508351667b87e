//! The power switch with real process trees, driven by the real fence_quorate binary.

mod common;
use agents::{FenceAgentError, FenceAgentRunner, PowerStatus};
use common::*;
use powerswitch::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn off_kills_the_whole_tree_and_stays_off_on_restarts() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("ps.sock");
    let sw = PowerSwitch::new(vec![
        OutletConfig::shell("node1", TREE),
        OutletConfig::shell("node2", TREE),
    ])
    .unwrap();
    let _srv = serve_unix(sw.clone(), &sock).await.unwrap();
    sw.all_on().await.unwrap();
    let list = sw.list().await;
    let (pg1, pg2) = (list[0].pgid.unwrap(), list[1].pgid.unwrap());
    let tree1 = wait_group(pg1, 4).await;
    wait_group(pg2, 4).await;

    let agent = fence_quorate();
    let agent = agent.to_str().unwrap();
    let r = FenceAgentRunner::default();
    let to = Duration::from_secs(10);
    assert_eq!(
        r.run(agent, &fq_args(&sock, "node1", "status"), to)
            .await
            .unwrap()
            .power,
        Some(PowerStatus::On)
    );

    let t0 = Instant::now();
    r.run(agent, &fq_args(&sock, "node1", "off"), to)
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(
        group(pg1).is_empty(),
        "survivors of node1's group: {:?}",
        group(pg1)
    );
    for pid in &tree1 {
        assert!(!group(pg1).contains(pid));
    }
    assert_eq!(group(pg2).len(), 4, "node2 must be untouched");
    eprintln!("fence_quorate off: {took:?}");
    // Stays off; status exits 2.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(group(pg1).is_empty());
    assert_eq!(
        r.run(agent, &fq_args(&sock, "node1", "status"), to)
            .await
            .unwrap()
            .power,
        Some(PowerStatus::Off)
    );
    // Off again is idempotent.
    r.run(agent, &fq_args(&sock, "node1", "off"), to)
        .await
        .unwrap();

    // On restarts a fresh tree.
    r.run(agent, &fq_args(&sock, "node1", "on"), to)
        .await
        .unwrap();
    let pg1b = sw.list().await[0].pgid.unwrap();
    assert_ne!(pg1b, pg1);
    wait_group(pg1b, 4).await;
    // Reboot: old group gone, new one running.
    r.run(agent, &fq_args(&sock, "node1", "reboot"), to)
        .await
        .unwrap();
    let pg1c = sw.list().await[0].pgid.unwrap();
    assert!(group(pg1b).is_empty());
    wait_group(pg1c, 4).await;
    assert_eq!(sw.list().await[0].starts, 3);

    // list, monitor, metadata.
    let rep = r
        .run(agent, &fq_args(&sock, "x", "list"), to)
        .await
        .unwrap();
    assert_eq!(rep.stdout, "node1,\nnode2,\n");
    r.run(agent, &fq_args(&sock, "x", "monitor"), to)
        .await
        .unwrap();
    let rep = r
        .run(agent, &fq_args(&sock, "x", "metadata"), to)
        .await
        .unwrap();
    let doc = roxmltree::Document::parse(&rep.stdout).unwrap();
    assert_eq!(doc.root_element().attribute("name"), Some("fence_quorate"));
    let actions: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("action"))
        .filter_map(|n| n.attribute("name"))
        .collect();
    for a in [
        "on", "off", "reboot", "status", "list", "monitor", "metadata",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    // Unknown outlet: exit 1 with the switch's explanation.
    let e = r
        .run(agent, &fq_args(&sock, "nope", "off"), to)
        .await
        .unwrap_err();
    match e {
        FenceAgentError::Failed {
            code: 1,
            stderr_tail,
            ..
        } => assert!(stderr_tail.contains("no outlet"), "{stderr_tail}"),
        other => panic!("{other:?}"),
    }
    sw.all_off().await;
    assert!(group(pg1c).is_empty() && group(pg2).is_empty());
}

#[tokio::test]
async fn tcp_loopback_and_command_line_mode() {
    let sw = PowerSwitch::new(vec![OutletConfig::shell("n1", TREE)]).unwrap();
    assert!(matches!(
        serve_tcp(sw.clone(), "0.0.0.0:0".parse().unwrap()).await,
        Err(SwitchError::NotLoopback(_))
    ));
    let (addr, _h) = serve_tcp(sw.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sw.all_on().await.unwrap();
    let pg = sw.list().await[0].pgid.unwrap();
    wait_group(pg, 4).await;
    // Command-line options, as an operator would type them.
    let port = addr.port().to_string();
    let out = tokio::process::Command::new(fence_quorate())
        .args(["-o", "off", "-n", "n1", "-a", "127.0.0.1", "-u", &port])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(group(pg).is_empty());
    let out = tokio::process::Command::new(fence_quorate())
        .args([
            "--action=status",
            "--plug=n1",
            "--ip=127.0.0.1",
            &format!("--ipport={port}"),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Raw protocol, garbage included.
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (rd, mut wr) = s.into_split();
    let mut rd = BufReader::new(rd).lines();
    for (req, want) in [
        ("on n1", "OK on"),
        ("LIST", "OK n1=on"),
        ("frob", "ERR unknown command \"frob\""),
        ("OFF n1", "OK off"),
    ] {
        wr.write_all(format!("{req}\n").as_bytes()).await.unwrap();
        let line = rd.next_line().await.unwrap().unwrap();
        assert!(line.starts_with(want), "{req} -> {line}");
    }
    // An endless line is refused and the connection closed; the server keeps serving.
    wr.write_all(&[b'x'; 5000]).await.unwrap();
    let line = rd.next_line().await.unwrap().unwrap();
    assert!(line.starts_with("ERR request longer than"), "{line}");
    assert_eq!(rd.next_line().await.unwrap(), None);
    assert_eq!(sw.status("n1").await.unwrap(), PowerState::Off);
}

#[tokio::test]
async fn sigstopped_node_is_still_killed() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("ps.sock");
    let sw = PowerSwitch::new(vec![OutletConfig::shell("n1", TREE)]).unwrap();
    let _srv = serve_unix(sw.clone(), &sock).await.unwrap();
    sw.all_on().await.unwrap();
    let pg = sw.list().await[0].pgid.unwrap();
    wait_group(pg, 4).await;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pg),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let r = FenceAgentRunner::default();
    r.run(
        fence_quorate().to_str().unwrap(),
        &fq_args(&sock, "n1", "off"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(
        group(pg).is_empty(),
        "stopped processes survived: {:?}",
        group(pg)
    );
}

#[tokio::test]
async fn bench_fence_round_trip() {
    let rep = powerswitch::bench::fence_round_trip(&fence_quorate(), 3)
        .await
        .unwrap();
    eprintln!("{rep}");
    assert_eq!(rep.rounds.len(), 3);
    assert!(rep.max() < Duration::from_secs(5), "{rep}");
}

#[tokio::test]
async fn server_binary_serves_and_powers_off_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("run/ps.sock");
    let logs = d.path().join("logs");
    let mut srv = tokio::process::Command::new(env!("CARGO_BIN_EXE_quorate-power-switch"))
        .arg("--socket")
        .arg(&sock)
        .arg("--log-dir")
        .arg(&logs)
        .args([
            "--outlet",
            &format!("a={TREE}"),
            "--outlet",
            "b=echo hello from b; exec sleep 1000",
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let r = FenceAgentRunner::default();
    let fq = fence_quorate();
    let fq = fq.to_str().unwrap();
    loop {
        if let Ok(rep) = r
            .run(
                fq,
                &fq_args(&sock, "x", "list-status"),
                Duration::from_secs(5),
            )
            .await
        {
            if rep.stdout == "a,,on\nb,,on\n" {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server never came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.run(fq, &fq_args(&sock, "b", "off"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        r.run(fq, &fq_args(&sock, "b", "status"), Duration::from_secs(5))
            .await
            .unwrap()
            .power,
        Some(PowerStatus::Off)
    );
    assert!(std::fs::read_to_string(logs.join("b.log"))
        .unwrap()
        .contains("hello from b"));
    // Find outlet a's group via /proc (its leader is a child of the server).
    let pid = srv.id().unwrap() as i32;
    let kids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.split_whitespace().nth(1) == Some(&pid.to_string()))
                })
                .unwrap_or(false)
        })
        .collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    let pg_a = kids[0];
    assert_eq!(group(pg_a).len(), 4);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = tokio::time::timeout(Duration::from_secs(10), srv.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(st.success(), "{st:?}");
    assert!(group(pg_a).is_empty(), "outlet a survived server shutdown");
    assert!(!sock.exists());
}
