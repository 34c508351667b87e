//! Multi-node tests with real `quorate node` processes, each in its own
//! network namespace (crates/labcluster), fenced through the virtual power
//! switch. Needs root, iproute2 and nftables (scripts/install-deps.sh).
//!
//! Each test asserts what really happened: which namespace holds the floating
//! address, which outlet is off, what each node answers on its admin socket.

use labcluster::{Files, LabCluster};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const IP: &str = "192.168.3.100";

/// How a test cluster is configured.
struct Conf {
    nodes: usize,
    token_ms: u32,
    cman: String,
    extra: String,
    domain: &'static str,
    service: String,
}

impl Conf {
    fn new(nodes: usize) -> Conf {
        Conf {
            nodes,
            token_ms: 1000,
            cman: String::from("<cman/>"),
            extra: String::new(),
            domain: r#"ordered="1" nofailback="1""#,
            service: String::from(r#"recovery="relocate""#),
        }
    }

    fn render(&self, f: &Files, names: &[&str]) -> String {
        let mut nodes = String::new();
        for (i, n) in names.iter().enumerate() {
            nodes.push_str(&format!(
                r#"<clusternode name="{n}" nodeid="{id}"><altname name="{n}.sn"/><fence><method name="power"><device name="pdu" port="{n}" action="off"/></method></fence></clusternode>"#,
                id = i + 1
            ));
        }
        let members: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!(r#"<failoverdomainnode name="{n}" priority="{}"/>"#, i + 1))
            .collect();
        format!(
            r#"<cluster name="lab" config_version="1">
  {cman}
  <totem token="{token}" keyfile="{key}"/>
  <fence_daemon post_fail_delay="0" clean_start="1"/>
  {extra}
  <clusternodes>{nodes}</clusternodes>
  <fencedevices><fencedevice name="pdu" agent="{agent}" socket="{socket}"/></fencedevices>
  <rm>
    <failoverdomains><failoverdomain name="dom" {domain}>{members}</failoverdomain></failoverdomains>
    <service name="web" domain="dom" {service}><ip address="{IP}/24" monitor_link="1"/></service>
  </rm>
</cluster>"#,
            cman = self.cman,
            token = self.token_ms,
            key = f.authkey.display(),
            extra = self.extra,
            agent = f.agent.display(),
            socket = f.socket.display(),
            domain = self.domain,
            service = self.service,
        )
    }

    fn start(self, dir: &Path) -> LabCluster {
        if let Err(e) = netlab::check_prerequisites() {
            panic!("multi-node tests need root, iproute2 and nftables: {e}");
        }
        let names: Vec<String> = (1..=self.nodes).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        LabCluster::new(
            Path::new(env!("CARGO_BIN_EXE_quorate")),
            dir,
            &refs,
            2,
            |f| self.render(f, &refs),
        )
        .unwrap_or_else(|e| panic!("lab cluster: {e}"))
    }
}

fn ok<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// Boot every node; wait for one quorate ring of all and the service placed once.
fn boot(c: &LabCluster) -> usize {
    ok(c.power_on_all());
    let n = c.names().len();
    ok(c.wait(
        "one quorate ring of all nodes",
        Duration::from_secs(60),
        |c| (0..n).all(|i| c.sees(i, &all(n), true)),
    ));
    ok(c.wait(
        "web running on exactly one node",
        Duration::from_secs(30),
        |c| {
            c.holders(IP).len() == 1
                && c.ask(0, "status")
                    .is_some_and(|v| v["services"][0]["state"] == "Started")
        },
    ));
    c.holders(IP)[0]
}

fn service(c: &LabCluster, from: usize) -> serde_json::Value {
    c.ask(from, "status")
        .map(|v| v["services"][0].clone())
        .unwrap_or_default()
}

#[test]
fn a_paused_or_crashed_owner_is_fenced_before_its_service_moves_and_a_lone_survivor_waits() {
    let dir = tempfile::tempdir().unwrap();
    let c = Conf::new(3).start(dir.path());
    // Whichever node the service landed on (with nofailback it stays where
    // the first quorate ring put it, which depends on boot order) is the
    // victim.
    let owner = boot(&c);
    let rest: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    // SIGSTOP for longer than the token: the others form a ring, fence the
    // paused owner (its processes are killed), then move web.
    ok(c.pause(owner));
    ok(c.wait("web on a survivor", Duration::from_secs(30), |c| {
        c.holders(IP).iter().any(|h| *h != owner)
    }));
    assert!(
        c.is_off(owner),
        "web moved only after the owner was fenced (its outlet is off)"
    );
    assert!(c.sees(rest[0], &rest, true) && c.sees(rest[1], &rest, true));
    // cman_tool status on a survivor: 2 of 3 votes, quorum 2 (3 / 2 + 1).
    let q = c.ask(rest[0], "cman.status").unwrap();
    assert_eq!(
        [
            &q["expected_votes"],
            &q["total_votes"],
            &q["quorum"],
            &q["quorate"]
        ],
        [&json!(3), &json!(2), &json!(2), &json!(true)],
        "{q}"
    );
    // SIGKILL of the new owner: the last node holds one vote of three, is not
    // quorate, does not fence (no fencing while inquorate) and starts nothing.
    let owner2 = c.holders(IP).into_iter().find(|h| *h != owner).unwrap();
    let other = if rest[0] == owner2 { rest[1] } else { rest[0] };
    ok(c.crash(owner2));
    ok(c.wait(
        "the survivor knows it is alone",
        Duration::from_secs(30),
        |c| c.sees(other, &[other], false),
    ));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !c.holders(IP).contains(&other),
        "an inquorate node must not start the service"
    );
    assert!(!c.is_off(owner2), "an inquorate partition must not fence");
    let q = c.ask(other, "cman.status").unwrap();
    assert_eq!(q["quorate"], false);
    assert_eq!(
        [&q["expected_votes"], &q["total_votes"], &q["quorum"]],
        [&json!(3), &json!(1), &json!(2)],
        "one vote of three is below quorum: {q}"
    );
    assert!(q["flags"].to_string().contains("Activity blocked"), "{q}");
    let f = c.ask(other, "fence.status").unwrap();
    assert!(
        f["victims"]
            .to_string()
            .contains(&format!("{}", owner2 + 1)),
        "the crashed node waits to be fenced: {f}"
    );
}

#[test]
fn a_short_pause_is_survived_and_a_lost_ring_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let c = Conf::new(3).start(dir.path());
    boot(&c);
    let before = c.ask(0, "totem.status").unwrap()["stats"]["membership_changes"]
        .as_u64()
        .unwrap();
    // A pause well under the token timeout changes nothing.
    ok(c.pause(2));
    std::thread::sleep(Duration::from_millis(300));
    ok(c.resume(2));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        c.sees(0, &all(3), true),
        "a 300 ms pause at token 1000 ms must not change the membership"
    );
    assert_eq!(
        c.ask(0, "totem.status").unwrap()["stats"]["membership_changes"]
            .as_u64()
            .unwrap(),
        before
    );
    // Node 2 loses ring 0: the cluster runs on ring 1, ring 0 is shown faulty.
    ok(c.lab().set_ring(1, 0, false).map_err(|e| e.to_string()));
    ok(c.wait(
        "ring 0 towards n2 marked faulty on n1",
        Duration::from_secs(15),
        |c| {
            c.ask(0, "totem.status").is_some_and(|v| {
                v["faulty_links"][0]
                    .as_array()
                    .is_some_and(|l| l.contains(&2.into()))
            })
        },
    ));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        c.sees(0, &all(3), true),
        "losing one of two rings keeps every member"
    );
    assert!(!c.is_off(1), "nobody is fenced for a lost ring");
    ok(c.lab().set_ring(1, 0, true).map_err(|e| e.to_string()));
    ok(c.wait("ring 0 healed", Duration::from_secs(15), |c| {
        c.ask(0, "totem.status").is_some_and(|v| {
            v["faulty_links"][0]
                .as_array()
                .is_some_and(|l| l.is_empty())
        })
    }));
}

#[test]
fn a_partitioned_node_is_fenced_by_the_majority_and_rejoins_after_power_on() {
    let dir = tempfile::tempdir().unwrap();
    let c = Conf::new(3).start(dir.path());
    boot(&c);
    // nftables drops everything between n3 and the others, on both rings.
    ok(c.lab().isolate(2).map_err(|e| e.to_string()));
    ok(c.wait(
        "the majority forms a ring of two",
        Duration::from_secs(30),
        |c| c.sees(0, &[0, 1], true),
    ));
    ok(
        c.wait("n3 fenced by the majority", Duration::from_secs(30), |c| {
            c.is_off(2)
        }),
    );
    ok(c.lab().rejoin(2).map_err(|e| e.to_string()));
    ok(c.power_on(2));
    ok(c.wait(
        "n3 back in one ring of three",
        Duration::from_secs(30),
        |c| c.sees(0, &all(3), true) && c.sees(2, &all(3), true),
    ));
    assert_eq!(
        c.holders(IP).len(),
        1,
        "the service still runs exactly once"
    );
}

#[test]
fn two_nodes_with_a_quorum_disk_split_leave_exactly_one_side_quorate() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("qdisk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["qdisk", "format"])
        .arg(&disk)
        .args(["--cluster", "lab"])
        .status()
        .unwrap();
    assert!(st.success(), "quorate qdisk format");
    let mut conf = Conf::new(2);
    conf.cman = r#"<cman expected_votes="3"/>"#.into();
    conf.token_ms = 7000;
    conf.extra = format!(
        r#"<quorumd interval="1" tko="3" votes="1" device="{}"/>"#,
        disk.display()
    );
    let c = conf.start(dir.path());
    ok(c.power_on_all());
    ok(c.wait(
        "both quorate with the disk's vote",
        Duration::from_secs(60),
        |c| {
            (0..2).all(|i| {
                c.ask(i, "cman.status")
                    .is_some_and(|v| v["quorate"] == true && v["total_votes"] == 3)
            })
        },
    ));
    ok(c.lab().cut(0, 1).map_err(|e| e.to_string()));
    let start = Instant::now();
    let mut settled = false;
    while start.elapsed() < Duration::from_secs(40) {
        let q: Vec<bool> = (0..2)
            .map(|i| !c.is_off(i) && c.ask(i, "quorum").is_some_and(|v| v["quorate"] == true))
            .collect();
        assert!(
            !(q[0] && q[1] && c.ask(0, "status").unwrap()["members"][1]["online"] == false),
            "both sides of the split claim quorum"
        );
        if (c.is_off(0) ^ c.is_off(1)) && (q[0] ^ q[1]) {
            settled = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        settled,
        "exactly one side should keep quorum and fence the other\n{}",
        c.post_mortem()
    );
}

#[test]
fn wait_for_all_holds_a_cold_started_two_node_cluster_until_both_were_seen() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(2);
    conf.cman = r#"<cman expected_votes="1" two_node="1"/>"#.into();
    let c = conf.start(dir.path());
    ok(c.power_on(0));
    ok(c.wait("n1 up", Duration::from_secs(30), |c| {
        c.ask(0, "quorum").is_some()
    }));
    std::thread::sleep(Duration::from_secs(4));
    let q = c.ask(0, "quorum").unwrap();
    assert_eq!(
        q["quorate"], false,
        "two_node implies wait_for_all: n1 alone must wait for n2: {q}"
    );
    assert!(c.holders(IP).is_empty(), "nothing starts before quorum");
    ok(c.power_on(1));
    ok(c.wait(
        "both quorate once both were seen",
        Duration::from_secs(30),
        |c| c.sees(0, &all(2), true) && c.sees(1, &all(2), true),
    ));
}

#[test]
fn relocate_clean_leave_and_failback_move_the_service_without_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let mut conf = Conf::new(3);
    conf.domain = r#"ordered="1" nofailback="0""#;
    let c = conf.start(dir.path());
    boot(&c);
    // If n2 and n3 formed the first quorate ring, web started on n2 and fails
    // back to n1 once it joins (ordered, nofailback="0").
    ok(c.wait(
        "web on n1, the first node of its ordered domain",
        Duration::from_secs(30),
        |c| c.holders(IP) == [0],
    ));
    let exe = env!("CARGO_BIN_EXE_quorate");
    // clusvcadm -r web -m n3
    let st = std::process::Command::new(exe)
        .args(["--state-dir"])
        .arg(c.state(1))
        .args(["svc", "relocate", "web", "-m", "n3", "--timeout", "30"])
        .status()
        .unwrap();
    assert!(st.success(), "relocate refused or failed");
    ok(c.wait("web on n3", Duration::from_secs(10), |c| {
        c.holders(IP) == [2]
    }));
    // A relocation to a node outside the cluster is refused with the reason.
    let out = std::process::Command::new(exe)
        .args(["--state-dir"])
        .arg(c.state(0))
        .args(["svc", "relocate", "web", "-m", "n9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("n9"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // n3 leaves cleanly: web moves first (to n1, the preferred member), n3 is not fenced.
    let st = std::process::Command::new(exe)
        .args(["--state-dir"])
        .arg(c.state(2))
        .args(["cman", "leave"])
        .status()
        .unwrap();
    assert!(st.success());
    ok(c.wait(
        "web moved off the leaving node",
        Duration::from_secs(30),
        |c| c.holders(IP) == [0],
    ));
    ok(
        c.wait("n3 gone from the ring", Duration::from_secs(30), |c| {
            c.sees(0, &[0, 1], true)
        }),
    );
    std::thread::sleep(Duration::from_secs(2));
    let fenced_log = c
        .log(0)
        .into_iter()
        .filter(|(_, t)| t.contains("n3 fenced by"))
        .count();
    assert_eq!(fenced_log, 0, "a clean leave is not fenced");
    let fenced = c.ask(0, "fence.status").unwrap();
    assert!(
        fenced["victims"].as_array().is_some_and(|v| v.is_empty()),
        "no victim after a clean leave: {fenced}"
    );
    ok(c.restart(2));
    ok(c.wait("n3 back", Duration::from_secs(30), |c| {
        c.sees(0, &all(3), true)
    }));
    // Ordered domain without nofailback: n1 crashes (fenced), web goes to n2,
    // the next in the domain; n1 is powered back on and web fails back to it.
    ok(c.crash(0));
    // A crashed node's namespace keeps its addresses until it is powered on
    // again (a real machine's would vanish with the power): look at the survivors.
    let took = ok(
        c.wait("web on n2 after n1's crash", Duration::from_secs(30), |c| {
            c.holders(IP).contains(&1) && !c.holders(IP).contains(&2) && c.is_off(0)
        }),
    );
    assert!(
        took < Duration::from_secs(4),
        "failover took {took:?} at token 1000 ms\n{}",
        c.post_mortem()
    );
    ok(c.power_on(0));
    ok(
        c.wait("web back on n1 (failback)", Duration::from_secs(40), |c| {
            c.holders(IP) == [0]
        }),
    );
    assert_eq!(service(&c, 1)["owner_name"], "n1");
}
