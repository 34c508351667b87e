//! Real fence_ipmilan (fence-agents) talking IPMI over LAN to ipmi_sim (openipmi),
//! whose chassis power control switches an outlet of our power switch.

mod common;
use agents::{AgentArgs, FenceAgentRunner, PowerStatus};
use common::*;
use powerswitch::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Ipmi-Secret-42";

fn need(program: &str, package: &str) -> PathBuf {
    agents::find_program(program, &agents::process::default_search_path()).unwrap_or_else(|| {
        panic!(
            "{program} not found: install the Debian package {package} (apt-get install {package})"
        )
    })
}

/// ipmi_sim in its own process group, killed with it on drop.
struct Sim {
    child: std::process::Child,
}
impl Drop for Sim {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_sim(dir: &Path, port: u16, sock: &Path, outlet: &str) -> Sim {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let hook = fixtures.join("ipmi_power_hook.sh");
    let conf = dir.join("lan.conf");
    std::fs::write(
        &conf,
        format!(
            "name \"quorate-test-bmc\"\nset_working_mc 0x20\n  startlan 1\n    addr 127.0.0.1 {port}\n    priv_limit admin\n    allowed_auths_callback none md5 straight\n    allowed_auths_user none md5 straight\n    allowed_auths_operator none md5 straight\n    allowed_auths_admin none md5 straight\n    guid a123456789abcdefa123456789abcdef\n  endlan\n  chassis_control \"{hook} {fq} {sock} {outlet}\"\n  user 2 true \"admin\" \"{PASSWORD}\" admin 10 none md5 straight\n",
            hook = hook.display(),
            fq = fence_quorate().display(),
            sock = sock.display(),
        ),
    )
    .unwrap();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    use std::os::unix::process::CommandExt;
    let log = std::fs::File::create(dir.join("ipmi_sim.log")).unwrap();
    let child = std::process::Command::new(need("ipmi_sim", "openipmi"))
        .arg("-c")
        .arg(&conf)
        .arg("-f")
        .arg(fixtures.join("bmc.emu"))
        .arg("-s")
        .arg(&state)
        .arg("-n")
        .env("HOOK_LOG", dir.join("hook.log"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    Sim { child }
}

fn ipmi_args(port: u16, action: &str) -> AgentArgs {
    AgentArgs::new()
        .with("ip", "127.0.0.1")
        .with("ipport", port.to_string())
        .with("username", "admin")
        .with("password", PASSWORD)
        .with("lanplus", "1")
        .with("cipher", "3")
        .with("power_wait", "0")
        .with("action", action)
        .with("nodename", "node1")
}

#[tokio::test]
async fn fence_ipmilan_through_ipmi_sim_powers_off_the_outlet() {
    need("fence_ipmilan", "fence-agents");
    need("ipmitool", "ipmitool");
    need("ipmi_sim", "openipmi");
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("ps.sock");
    let sw = PowerSwitch::new(vec![OutletConfig::shell("node1", TREE)]).unwrap();
    let _srv = serve_unix(sw.clone(), &sock).await.unwrap();
    sw.all_on().await.unwrap();
    let pg = sw.list().await[0].pgid.unwrap();
    wait_group(pg, 4).await;

    let port = free_udp_port();
    let _sim = start_sim(d.path(), port, &sock, "node1");
    let r = FenceAgentRunner::default();
    let to = Duration::from_secs(30);
    // Wait for the BMC to answer.
    let t0 = Instant::now();
    loop {
        match r.run("fence_ipmilan", &ipmi_args(port, "status"), to).await {
            Ok(rep) => {
                assert_eq!(rep.power, Some(PowerStatus::On));
                break;
            }
            Err(e) => {
                let log =
                    std::fs::read_to_string(d.path().join("ipmi_sim.log")).unwrap_or_default();
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "ipmi_sim on 127.0.0.1:{port} never answered: {e}\nipmi_sim log:\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    eprintln!("ipmi_sim ready in {:?}", t0.elapsed());

    let t = Instant::now();
    let rep = r
        .run("fence_ipmilan", &ipmi_args(port, "off"), to)
        .await
        .unwrap();
    eprintln!(
        "fence_ipmilan off: {:?} (agent {:?})",
        t.elapsed(),
        rep.elapsed
    );
    assert!(
        group(pg).is_empty(),
        "node1's processes survived IPMI power off: {:?}",
        group(pg)
    );
    assert_eq!(sw.status("node1").await.unwrap(), PowerState::Off);
    assert_eq!(
        r.run("fence_ipmilan", &ipmi_args(port, "status"), to)
            .await
            .unwrap()
            .power,
        Some(PowerStatus::Off)
    );

    r.run("fence_ipmilan", &ipmi_args(port, "on"), to)
        .await
        .unwrap();
    let pg2 = sw.list().await[0].pgid.unwrap();
    wait_group(pg2, 4).await;
    let t = Instant::now();
    r.run("fence_ipmilan", &ipmi_args(port, "reboot"), to)
        .await
        .unwrap();
    eprintln!("fence_ipmilan reboot: {:?}", t.elapsed());
    assert!(group(pg2).is_empty(), "reboot left the old tree running");
    let pg3 = sw.list().await[0].pgid.unwrap();
    assert_ne!(pg3, pg2);
    wait_group(pg3, 4).await;

    // A wrong password is a clean failure, and the real one never shows in the error.
    let bad = ipmi_args(port, "status").with("password", "wrong-password");
    let e = r.run("fence_ipmilan", &bad, to).await.unwrap_err();
    assert!(matches!(e, agents::FenceAgentError::Failed { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("wrong-password"));

    // The fence domain, end to end: member lost -> fence_ipmilan -> outlet off -> Fenced.
    let dev = fence::Device::from_attrs(
        {
            let mut a = ipmi_args(port, "x");
            a.remove("action");
            a
        }
        .with("agent", "fence_ipmilan")
        .with("name", "bmc1")
        .with("timeout", "30"),
    )
    .unwrap();
    let mut cfg = fence::FenceConfig {
        post_fail_delay: base::Duration::ZERO,
        ..fence::FenceConfig::default()
    };
    cfg.nodes.insert(
        base::NodeId(2),
        fence::NodeFence {
            name: "node1".into(),
            methods: vec![fence::Method {
                name: "ipmi".into(),
                devices: vec![dev],
            }],
            unfence: vec![],
        },
    );
    let mut dom = fence::FenceDomain::new(base::NodeId(1), cfg);
    let origin = Instant::now();
    let m = |v: &[u32]| fence::Membership {
        members: v.iter().map(|i| base::NodeId(*i)).collect(),
        quorate: true,
    };
    dom.handle_membership(base::Instant(1), m(&[1, 2]));
    let lost = Instant::now();
    dom.handle_membership(
        base::Instant(lost.duration_since(origin).as_nanos() as u64),
        m(&[1]),
    );
    drive_until_fenced(&mut dom, origin, base::NodeId(2)).await;
    eprintln!(
        "member loss -> fenced via fence_ipmilan (reboot): {:?}",
        lost.elapsed()
    );
    assert!(
        group(pg3).is_empty(),
        "the domain's fencing left the tree running"
    );
    // Reboot: powered back on with a fresh tree.
    assert_eq!(sw.status("node1").await.unwrap(), PowerState::On);
    let hook_log = std::fs::read_to_string(d.path().join("hook.log")).unwrap_or_default();
    assert!(hook_log.contains("set power 0"), "{hook_log}");
    assert!(!hook_log.contains(PASSWORD));
    sw.all_off().await;
}
