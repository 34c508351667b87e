//! Fencing of real `quorate node` processes in network namespaces
//! (crates/labcluster): Debian's `fence_ipmilan` talking IPMI over LAN to
//! OpenIPMI's `ipmi_sim` (one simulated BMC per node, on a "BMC host" of its
//! own on the ring-0 bridge, whose chassis power control is the node's
//! power-switch outlet), and methods that fail (missing agent, hanging agent)
//! falling through to the power switch. Needs root, iproute2, nftables,
//! fence-agents, ipmitool and openipmi (scripts/install-deps.sh).

mod common;
use common::*;
use labcluster::LabCluster;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The lab BMCs' admin password: it must never show in a log.
const PASSWORD: &str = "Lab-Bmc-Secret-77";

fn need(program: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{program} not found: install the Debian package {package} (apt-get install {package})"
        )
    })
}

/// The BMC of node `i`: 192.168.3.(201 + i), IPMI port 623.
fn bmc_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 3, 201 + i as u8)
}

/// The `ipmi_sim` processes of the lab's BMC host, each in its own process
/// group, killed with it on drop.
struct Bmcs {
    children: Vec<std::process::Child>,
}

impl Drop for Bmcs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.wait();
        }
    }
}

/// Put one BMC per node on a host namespace of its own on ring 0; each one's
/// chassis power control switches that node's outlet through fence_quorate.
fn start_bmcs(c: &mut LabCluster) -> Bmcs {
    let sim = need("ipmi_sim", "openipmi");
    need("ipmitool", "ipmitool");
    need("fence_ipmilan", "fence-agents");
    let n = c.names().len();
    let addrs: Vec<Ipv4Addr> = (0..n).map(bmc_addr).collect();
    let ns = c
        .lab_mut()
        .add_host("bmc", 0, &addrs)
        .unwrap_or_else(|e| panic!("BMC host: {e}"));
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../powerswitch/tests/fixtures");
    let hook = fixtures.join("ipmi_power_hook.sh");
    let mut bmcs = Bmcs { children: vec![] };
    for (i, addr) in addrs.iter().enumerate() {
        let dir = c.files().dir.join(format!("bmc{}", i + 1));
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let conf = dir.join("lan.conf");
        std::fs::write(
            &conf,
            format!(
                "name \"bmc{k}\"\nset_working_mc 0x20\n  startlan 1\n    addr {addr} 623\n    priv_limit admin\n    allowed_auths_callback none md5 straight\n    allowed_auths_user none md5 straight\n    allowed_auths_operator none md5 straight\n    allowed_auths_admin none md5 straight\n    guid a123456789abcdefa123456789abcde{k}\n  endlan\n  chassis_control \"{hook} {fq} {sock} {outlet}\"\n  user 2 true \"admin\" \"{PASSWORD}\" admin 10 none md5 straight\n",
                k = i + 1,
                hook = hook.display(),
                fq = c.files().agent.display(),
                sock = c.files().socket.display(),
                outlet = c.names()[i],
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("ipmi_sim.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&sim)
            .arg("-c")
            .arg(&conf)
            .arg("-f")
            .arg(fixtures.join("bmc.emu"))
            .arg("-s")
            .arg(dir.join("state"))
            .arg("-n")
            .env("HOOK_LOG", dir.join("hook.log"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        bmcs.children.push(child);
    }
    bmcs
}

/// Run fence_ipmilan from node `from`'s namespace against node `target`'s
/// BMC (arguments on stdin, as the daemon does): its exit code and stdout
/// (for `status`, 0 is on and 2 is off, per the FenceAgentAPI).
fn ipmilan(c: &LabCluster, from: usize, target: usize, action: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut cmd = c.lab().command(from, "fence_ipmilan");
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run fence_ipmilan");
    let args = format!(
        "ip={}\nusername=admin\npassword={PASSWORD}\nlanplus=1\ncipher=3\npower_wait=0\naction={action}\n",
        bmc_addr(target)
    );
    let _ = child.stdin.take().unwrap().write_all(args.as_bytes());
    let out = child.wait_with_output().expect("wait for fence_ipmilan");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Whether node `target`'s BMC answers `status` from node `from` with `power` ("ON"/"OFF").
fn bmc_says(c: &LabCluster, from: usize, target: usize, power: &str) -> bool {
    let (code, out) = ipmilan(c, from, target, "status");
    let want = if power == "ON" { 0 } else { 2 };
    code == Some(want) && out.contains(&format!("Status: {power}"))
}

fn node_log_file(c: &LabCluster, i: usize) -> String {
    std::fs::read_to_string(c.files().dir.join(format!("{}.log", c.names()[i]))).unwrap_or_default()
}

#[test]
fn a_crashed_or_hung_owner_is_fenced_with_fence_ipmilan_through_ipmi_sim_and_its_service_moves() {
    let dir = tempfile::tempdir().unwrap();
    // The seed's layout: two nodes, each fenced by its own IPMI BMC.
    let mut conf = Conf::new(2);
    conf.cman = r#"<cman expected_votes="1" two_node="1"/>"#.into();
    conf.devices = (0..2)
        .map(|i| {
            format!(
                r#"<fencedevice name="bmc{k}" agent="fence_ipmilan" ip="{addr}" username="admin" password="{PASSWORD}" lanplus="1" cipher="3" power_wait="0" timeout="30"/>"#,
                k = i + 1,
                addr = bmc_addr(i)
            )
        })
        .collect::<Vec<_>>()
        .join("\n    ");
    conf.fence = Box::new(|_, i, _| {
        format!(
            r#"<fence><method name="ipmi"><device name="bmc{}" action="off"/></method></fence>"#,
            i + 1
        )
    });
    let mut c = conf.start(dir.path());
    let _bmcs = start_bmcs(&mut c);
    // Both BMCs answer over the BMC network from the other node's namespace.
    let t0 = Instant::now();
    for (from, to) in [(0, 1), (1, 0)] {
        while !bmc_says(&c, from, to, "OFF") {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "BMC of {} at {} does not answer from {}: {:?}",
                c.names()[to],
                bmc_addr(to),
                c.names()[from],
                ipmilan(&c, from, to, "status")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    boot(&c);
    let owner = web_started(&c, 0);
    let other = 1 - owner;
    assert!(
        bmc_says(&c, other, owner, "ON"),
        "the owner's BMC reports power on: {:?}",
        ipmilan(&c, other, owner, "status")
    );
    let killed = Instant::now();
    ok(c.crash(owner));
    ok(c.wait(
        "the owner fenced through its BMC and web on the survivor",
        Duration::from_secs(60),
        |c| {
            c.is_off(owner)
                && c.holders(IP).contains(&other)
                && service(c, other, "web")["state"] == "Started"
        },
    ));
    let took = killed.elapsed();
    eprintln!(
        "SIGKILL of the owner -> fenced by fence_ipmilan -> web started on the survivor: {took:?}"
    );
    let oname = &c.names()[owner];
    let events = log_text(&c, other);
    let ran = log_pos(
        &c,
        other,
        &format!(
            "running fence_ipmilan (device bmc{}) action off against {oname}",
            owner + 1
        ),
    );
    let fenced = log_pos(
        &c,
        other,
        &format!(
            "{oname} fenced by {} with method ipmi (device bmc{})",
            c.names()[other],
            owner + 1
        ),
    );
    assert!(
        ran.is_some() && fenced.is_some() && ran < fenced,
        "the fence log names fence_ipmilan:\n{events}"
    );
    // The BMC really switched the outlet: ipmi_sim ran its chassis control.
    let hook = std::fs::read_to_string(dir.path().join(format!("bmc{}/hook.log", owner + 1)))
        .unwrap_or_default();
    assert!(
        hook.contains("set power 0"),
        "ipmi_sim's power hook: {hook}"
    );
    assert!(
        bmc_says(&c, other, owner, "OFF"),
        "the BMC reports the victim powered off: {:?}",
        ipmilan(&c, other, owner, "status")
    );
    let s = service(&c, other, "web");
    assert_eq!(s["last_owner_name"], oname.as_str(), "{s}");
    let fs = c.ask(other, "fence.status").unwrap();
    assert!(
        fs["victims"].as_array().is_some_and(|v| v.is_empty()),
        "{fs}"
    );
    assert!(fs["fenced"].to_string().contains("ipmi"), "{fs}");
    for i in 0..2 {
        assert!(
            !node_log_file(&c, i).contains(PASSWORD),
            "the BMC password reached {}'s log",
            c.names()[i]
        );
    }
    assert!(!events.contains(PASSWORD));
    // The operator powers the victim back on through its BMC; it boots and rejoins.
    let (code, out) = ipmilan(&c, other, owner, "on");
    assert_eq!(code, Some(0), "fence_ipmilan on: {out}");
    ok(c.wait(
        "the victim powered on by IPMI and back in the ring",
        Duration::from_secs(40),
        |c| !c.is_off(owner) && c.sees(owner, &all(2), true) && c.sees(other, &all(2), true),
    ));
    // Now the new owner hangs (SIGSTOP): the other node fences it through its own BMC.
    ok(c.pause(other));
    ok(c.wait(
        "the hung node fenced through its BMC and web back on the first node",
        Duration::from_secs(60),
        |c| {
            c.is_off(other)
                && c.holders(IP).contains(&owner)
                && service(c, owner, "web")["state"] == "Started"
        },
    ));
    let oname2 = &c.names()[other];
    let events = log_text(&c, owner);
    assert!(
        events.contains(&format!(
            "{oname2} fenced by {} with method ipmi (device bmc{})",
            c.names()[owner],
            other + 1
        )),
        "{events}"
    );
    let hook = std::fs::read_to_string(dir.path().join(format!("bmc{}/hook.log", other + 1)))
        .unwrap_or_default();
    assert!(
        hook.contains("set power 0"),
        "ipmi_sim's power hook: {hook}"
    );
}

#[test]
fn failing_fence_methods_fall_through_to_the_power_switch() {
    let dir = tempfile::tempdir().unwrap();
    // An agent that hangs: it records its pid, then sleeps far past its timeout.
    let bin = dir.path().join("agents");
    std::fs::create_dir_all(&bin).unwrap();
    let hang = bin.join("fence_hang");
    write_script(
        &hang,
        &format!(
            "#!/bin/sh\ncat >/dev/null\necho $$ >> {}/hang.pids\nexec sleep 600\n",
            dir.path().display()
        ),
    );
    let mut conf = Conf::new(3);
    conf.devices = format!(
        r#"<fencedevice name="nothere" agent="fence_not_installed_anywhere"/>
    <fencedevice name="stuck" agent="{}" timeout="5"/>"#,
        hang.display()
    );
    // Methods in document order: a missing agent, a hanging one, the power switch.
    conf.fence = Box::new(|_, _, n| {
        format!(
            r#"<fence><method name="gone"><device name="nothere" port="{n}"/></method><method name="slow"><device name="stuck" port="{n}"/></method><method name="power"><device name="pdu" port="{n}" action="off"/></method></fence>"#
        )
    });
    let c = conf.start(dir.path());
    boot(&c);
    let owner = web_started(&c, 0);
    let oname = c.names()[owner].clone();
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    // fenced's rule: the lowest node id among the members fences.
    let fencer = rest[0];
    ok(c.crash(owner));
    // While the hanging agent runs (5 s), `fence status` already tells the first failure.
    let mut seen_missing = None;
    ok(c.wait(
        "the owner fenced by the power switch and web moved",
        Duration::from_secs(60),
        |c| {
            if seen_missing.is_none() {
                if let Some(v) = c.ask(fencer, "fence.status") {
                    let victim = &v["victims"][0];
                    if victim["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("fence_not_installed_anywhere"))
                    {
                        seen_missing = Some(victim.clone());
                    }
                }
            }
            c.is_off(owner) && c.holders(IP).iter().any(|h| rest.contains(h))
        },
    ));
    let v = seen_missing.expect("fence status showed the missing agent while the next method ran");
    let err = v["last_error"].as_str().unwrap();
    assert!(
        err.starts_with(
            "method gone device nothere: fence agent \"fence_not_installed_anywhere\" not found"
        ) && err.contains("fence-agents"),
        "a missing agent says where it came from and what to install: {v}"
    );
    assert_eq!(v["tries"], 1, "the missing agent was the first try: {v}");
    let events = log_text(&c, fencer);
    let gone = log_pos(&c, fencer, &format!("fencing {oname} with method gone device nothere failed: fence agent \"fence_not_installed_anywhere\" not found"));
    let slow = log_pos(&c, fencer, &format!("fencing {oname} with method slow device stuck failed: fence agent {} action reboot hung for 5s and was killed", hang.display()));
    let power = log_pos(
        &c,
        fencer,
        &format!(
            "{oname} fenced by {} with method power (device pdu)",
            c.names()[fencer]
        ),
    );
    assert!(
        gone.is_some() && slow.is_some() && power.is_some() && gone < slow && slow < power,
        "methods tried in order, each failure in words, the last one fenced:\n{events}"
    );
    // The hung agent's process was killed, not left behind.
    let pids = std::fs::read_to_string(dir.path().join("hang.pids")).unwrap_or_default();
    assert!(!pids.trim().is_empty(), "the hanging agent ran");
    for pid in pids.split_whitespace() {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) != Some("Z"));
        assert!(!alive, "hung agent {pid} still runs after its timeout");
    }
    let fs = c.ask(fencer, "fence.status").unwrap();
    assert!(
        fs["victims"].as_array().is_some_and(|v| v.is_empty()),
        "{fs}"
    );
    assert!(fs["fenced"].to_string().contains("power"), "{fs}");
    let s = service(&c, fencer, "web");
    assert_eq!(s["state"], "Started", "{s}");
    assert_eq!(s["last_owner_name"], oname.as_str(), "{s}");
}

/// Seconds since midnight UTC of the first `HH:MM:SS.mmm UTC` in `text`.
fn time_of_day(text: &str) -> Option<f64> {
    let i = text.find(" UTC")?;
    let t = text.get(i.checked_sub(12)?..i)?;
    let mut p = t.split(':');
    let (h, m, s) = (p.next()?, p.next()?, p.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// Three nodes whose first fence method hangs for 3 s (then is killed) and
/// whose second is the power switch.
fn slow_then_power(dir: &Path) -> LabCluster {
    let hang = dir.join("fence_hang");
    write_script(&hang, "#!/bin/sh\ncat >/dev/null\nexec sleep 600\n");
    let mut conf = Conf::new(3);
    conf.devices = format!(
        r#"<fencedevice name="stuck" agent="{}" timeout="3"/>"#,
        hang.display()
    );
    conf.fence = Box::new(|_, _, n| {
        format!(
            r#"<fence><method name="slow"><device name="stuck" port="{n}"/></method><method name="power"><device name="pdu" port="{n}" action="off"/></method></fence>"#
        )
    });
    conf.start(dir)
}

/// The recovery event names when the node was fenced, not when it was lost
/// (the fence outcome carries its sender's clock).
#[test]
fn the_recovery_event_names_the_time_of_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let c = slow_then_power(dir.path());
    boot(&c);
    let owner = web_started(&c, 0);
    let fencer = (0..3).find(|i| *i != owner).unwrap();
    let oname = c.names()[owner].clone();
    ok(c.crash(owner));
    ok(
        c.wait("web moved after fencing", Duration::from_secs(60), |c| {
            c.is_off(owner) && service(c, fencer, "web")["state"] == "Started"
        }),
    );
    let log = c.log(fencer);
    let fenced_at = log
        .iter()
        .find(|(_, t)| t.contains(&format!("{oname} fenced by ")) && t.starts_with("fence:"))
        .map(|(at, _)| at % 86_400.0)
        .expect("the fence log line");
    let (_, moved) = log
        .iter()
        .find(|(_, t)| t.contains(&format!("moved web from {oname}")))
        .expect("the move is logged");
    let said = time_of_day(moved).expect("a time in the move's reason");
    assert!(
        (said - fenced_at).abs() < 1.0,
        "'{moved}' should name the fencing at {fenced_at:.3} s of the day, not {said:.3}"
    );
}

/// `quorate fence status` (text) names the victim and says its state in
/// words, while it waits and once fenced.
#[test]
fn fence_status_text_names_the_victim() {
    let dir = tempfile::tempdir().unwrap();
    let c = slow_then_power(dir.path());
    boot(&c);
    let owner = web_started(&c, 0);
    let fencer = (0..3).find(|i| *i != owner).unwrap();
    let oname = c.names()[owner].clone();
    ok(c.crash(owner));
    let mut waiting = None;
    ok(c.wait("the owner fenced", Duration::from_secs(60), |c| {
        if waiting.is_none() {
            let o = cli(c, fencer, &["fence", "status"]);
            let t = String::from_utf8_lossy(&o.stdout).into_owned();
            if t.contains("victim ") {
                waiting = Some(t);
            }
        }
        c.is_off(owner)
    }));
    let waiting = waiting.expect("fence status listed the victim during the 3 s hang");
    assert!(
        waiting.contains(&format!("victim {oname}: fence agent running")),
        "{waiting}"
    );
    // The switch reports the outlet off before the agent has exited and its
    // outcome gone round the ring, so the record may lag `is_off` briefly.
    let want = format!("fenced {oname}: method power by {}", c.names()[fencer]);
    let mut last = String::new();
    let seen = c.wait(
        "fence status records the fencing",
        Duration::from_secs(20),
        |c| {
            let o = cli(c, fencer, &["fence", "status"]);
            last = String::from_utf8_lossy(&o.stdout).into_owned();
            last.contains(&want)
        },
    );
    assert!(seen.is_ok(), "{want:?} not in:\n{last}");
}

/// fenced's rule: after every method failed, wait override_time and start
/// again, forever; nothing the victim held is recovered meanwhile, and the
/// daemon keeps answering. The BMC "comes back" when the flag file goes.
#[test]
fn a_failing_fence_agent_is_retried_in_rounds_and_nothing_moves_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("bmc-down");
    let agent = dir.path().join("fence_flaky");
    let mut conf = Conf::new(3);
    conf.fence_daemon = r#"post_fail_delay="0" clean_start="1" override_time="1""#.into();
    conf.fence = Box::new(|_, _, n| {
        format!(
            r#"<fence><method name="flaky"><device name="flaky" port="{n}" action="off"/></method></fence>"#
        )
    });
    // The lab puts the switch's socket at DIR/pdu.sock (checked below).
    conf.devices = format!(
        r#"<fencedevice name="flaky" agent="{}" socket="{}"/>"#,
        agent.display(),
        dir.path().join("pdu.sock").display()
    );
    let c = conf.start(dir.path());
    // Fails while the flag exists; then it is the power switch's agent
    // (which reads the same key=value lines from stdin).
    write_script(
        &agent,
        &format!(
            "#!/bin/sh\nif [ -e {flag} ]; then echo 'simulated: BMC does not answer' >&2; exit 1; fi\nexec {fq}\n",
            flag = flag.display(),
            fq = c.files().agent.display()
        ),
    );
    assert_eq!(c.files().socket, dir.path().join("pdu.sock"));
    boot(&c);
    let owner = web_started(&c, 0);
    let fencer = (0..3).find(|i| *i != owner).unwrap();
    let oname = c.names()[owner].clone();
    std::fs::write(&flag, "").unwrap();
    ok(c.crash(owner));
    ok(c.wait(
        "two failed rounds over every method",
        Duration::from_secs(40),
        |c| {
            c.ask(fencer, "fence.status")
                .is_some_and(|v| v["victims"][0]["rounds"].as_u64() >= Some(2))
        },
    ));
    let v = c.ask(fencer, "fence.status").unwrap()["victims"][0].clone();
    let err = v["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("method flaky device flaky")
            && err.contains("exit code 1")
            && err.contains("simulated: BMC does not answer"),
        "the last error says which device failed and what it printed: {v}"
    );
    assert_eq!(v["name"], oname.as_str(), "{v}");
    // Not fenced, so not recovered: web waits, on every survivor's view.
    holds_for(&c, "web waits for fencing", Duration::from_secs(2), |c| {
        let h = c.holders(IP);
        !c.is_off(owner)
            && h.iter().all(|i| *i == owner)
            && (0..3)
                .filter(|i| *i != owner)
                .all(|i| service(c, i, "web")["state"] == "Recovering")
    });
    let st = c.ask(fencer, "status").unwrap();
    assert!(
        st["fence_blocked"].to_string().contains(&oname),
        "status says what is blocked on fencing: {st}"
    );
    // The device answers again: the next round fences and web moves.
    std::fs::remove_file(&flag).unwrap();
    ok(c.wait(
        "fenced in a later round and web moved",
        Duration::from_secs(30),
        |c| {
            c.is_off(owner)
                && c.holders(IP).iter().any(|h| *h != owner)
                && service(c, fencer, "web")["state"] == "Started"
        },
    ));
    let events = log_text(&c, fencer);
    let failures = events
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "fencing {oname} with method flaky device flaky failed"
            ))
        })
        .count();
    assert!(failures >= 2, "each failed try is logged:\n{events}");
    assert!(
        events.contains(&format!(
            "{oname} fenced by {} with method flaky (device flaky)",
            c.names()[fencer]
        )),
        "{events}"
    );
}

/// The seed's two-node fence race: both sides of a split are quorate
/// (two_node) and each tries to fence the other; `delay="3"` on the device
/// that fences n1 makes n2 wait, so n1 shoots first and survives, whichever
/// node ran the service.
#[test]
fn in_a_two_node_split_the_node_whose_device_has_a_delay_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(2);
    conf.cman = r#"<cman expected_votes="1" two_node="1"/>"#.into();
    conf.fence = Box::new(|_, i, n| {
        let delay = if i == 0 { r#" delay="3""# } else { "" };
        format!(
            r#"<fence><method name="power"><device name="pdu" port="{n}" action="off"{delay}/></method></fence>"#
        )
    });
    let c = conf.start(dir.path());
    boot(&c);
    web_started(&c, 0);
    ok(c.lab().cut(0, 1).map_err(|e| e.to_string()));
    ok(c.wait("n2 fenced by n1", Duration::from_secs(30), |c| c.is_off(1)));
    holds_for(&c, "n1 survives the race", Duration::from_secs(5), |c| {
        !c.is_off(0)
    });
    ok(c.wait("web on n1", Duration::from_secs(20), |c| {
        c.holders(IP).contains(&0) && service(c, 0, "web")["state"] == "Started"
    }));
    let events = log_text(&c, 0);
    assert!(
        events.contains("n2 fenced by n1 with method power (device pdu)"),
        "{events}"
    );
}
