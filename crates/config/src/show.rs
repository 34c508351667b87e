//! The human form of `quorate config show`: sections, defaults marked `(default)`.

use crate::model::*;
use std::collections::BTreeMap;
use std::fmt::Write;

fn attrs_line(attrs: &BTreeMap<String, String>) -> String {
    attrs
        .iter()
        .map(|(k, v)| {
            if is_secret_attr(k) {
                format!("{k}={REDACTED}")
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A setting with its unit, the `(default)` mark last.
fn u<T: std::fmt::Display>(s: &Setting<T>, unit: &str) -> String {
    if s.default {
        format!("{} {unit} (default)", s.value)
    } else {
        format!("{} {unit}", s.value)
    }
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Renders the effective model for a human. Secrets are never printed.
pub fn render_text(c: &ClusterConf) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(
        w,
        "cluster {} (config_version {})",
        c.name, c.config_version
    );
    let _ = writeln!(w, "\ncman:");
    let _ = writeln!(
        w,
        "  two_node                  {}",
        c.cman.two_node.map_bool()
    );
    let _ = writeln!(w, "  port                      {}", c.cman.port);
    let _ = writeln!(w, "  cluster_id                {}", c.cman.cluster_id);
    let _ = writeln!(w, "  multicast                 {}", c.cman.multicast);
    let _ = writeln!(w, "  keyfile                   {}", opt(&c.cman.keyfile));
    let q = &c.quorum;
    let _ = writeln!(w, "\nquorum:");
    let _ = writeln!(w, "  total votes               {}", q.total_votes);
    let _ = writeln!(w, "  expected votes            {}", q.expected_votes);
    let _ = writeln!(w, "  quorum                    {}", q.quorum);
    let _ = writeln!(
        w,
        "  wait_for_all              {}",
        q.wait_for_all.map_bool()
    );
    let _ = writeln!(
        w,
        "  last_man_standing         {}",
        q.last_man_standing.map_bool()
    );
    let _ = writeln!(
        w,
        "  last_man_standing_window  {}",
        u(&q.last_man_standing_window, "ms")
    );
    let t = &c.totem;
    let _ = writeln!(w, "\ntotem:");
    let _ = writeln!(w, "  token                     {}", u(&t.token, "ms"));
    let _ = writeln!(w, "  join                      {}", u(&t.join, "ms"));
    let _ = writeln!(w, "  consensus                 {}", u(&t.consensus, "ms"));
    let _ = writeln!(
        w,
        "  token_retransmits_before_loss_const {}",
        t.token_retransmits_before_loss_const
    );
    let _ = writeln!(w, "  fail_recv_const           {}", t.fail_recv_const);
    let _ = writeln!(w, "  rrp_mode                  {}", t.rrp_mode);
    let _ = writeln!(w, "  secauth                   {}", t.secauth.map_bool());
    let _ = writeln!(w, "  keyfile                   {}", opt(&t.keyfile));
    for i in &t.interfaces {
        let _ = writeln!(
            w,
            "  interface ring {}: bindnetaddr {} mcastaddr {} mcastport {}",
            i.ringnumber,
            opt(&i.bindnetaddr),
            opt(&i.mcastaddr),
            i.mcastport
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    if let Some(qd) = &c.quorumd {
        let _ = writeln!(w, "\nquorumd:");
        let _ = writeln!(w, "  device                    {}", opt(&qd.device));
        let _ = writeln!(w, "  label                     {}", opt(&qd.label));
        let _ = writeln!(w, "  interval                  {}", u(&qd.interval, "s"));
        let _ = writeln!(w, "  tko                       {}", qd.tko);
        let _ = writeln!(w, "  master_wait               {}", qd.master_wait);
        let _ = writeln!(w, "  upgrade_wait              {}", qd.upgrade_wait);
        let _ = writeln!(w, "  votes                     {}", qd.votes);
        let _ = writeln!(w, "  min_score                 {}", qd.min_score);
        let _ = writeln!(
            w,
            "  master_wins               {}",
            qd.master_wins.map_bool()
        );
        let _ = writeln!(w, "  reboot                    {}", qd.reboot.map_bool());
        for h in &qd.heuristics {
            let _ = writeln!(
                w,
                "  heuristic \"{}\" score {} interval {} s tko {}",
                h.program, h.score, h.interval, h.tko
            );
        }
    }
    let f = &c.fence_daemon;
    let _ = writeln!(w, "\nfence_daemon:");
    let _ = writeln!(
        w,
        "  post_join_delay           {}",
        u(&f.post_join_delay, "s")
    );
    let _ = writeln!(
        w,
        "  post_fail_delay           {}",
        u(&f.post_fail_delay, "s")
    );
    let _ = writeln!(
        w,
        "  clean_start               {}",
        f.clean_start.map_bool()
    );
    let _ = writeln!(
        w,
        "  skip_undefined            {}",
        f.skip_undefined.map_bool()
    );
    let _ = writeln!(
        w,
        "  override_time             {}",
        u(&f.override_time, "s")
    );
    let _ = writeln!(w, "  override_path             {}", f.override_path);
    let _ = writeln!(w, "\nnodes:");
    for n in &c.nodes {
        let _ = writeln!(w, "  {} nodeid {} votes {}", n.name, n.nodeid, n.votes);
        for a in &n.altnames {
            let _ = writeln!(w, "    altname {}", a.name);
        }
        if n.fence.is_empty() {
            let _ = writeln!(w, "    fence: none (warning: this node cannot be fenced)");
        }
        for m in &n.fence {
            let _ = writeln!(w, "    fence method {}:", m.name);
            for d in &m.devices {
                let _ = writeln!(w, "      device {} {}", d.name, attrs_line(&d.attrs));
            }
        }
        for d in &n.unfence {
            let _ = writeln!(w, "    unfence device {} {}", d.name, attrs_line(&d.attrs));
        }
    }
    if !c.replicas.is_empty() {
        let _ = writeln!(w, "\nreplicas:");
    }
    for r in &c.replicas {
        let _ = writeln!(w, "  replica {} size {} bytes:", r.name, r.size);
        let _ = writeln!(w, "    protocol                {}", r.protocol);
        let _ = writeln!(w, "    port                    {}", r.port);
        let _ = writeln!(w, "    nbd_port                {}", r.nbd_port);
        let _ = writeln!(w, "    fencing                 {}", r.fencing);
        let _ = writeln!(w, "    after-sb-0pri           {}", r.after_sb_0pri);
        let _ = writeln!(w, "    after-sb-1pri           {}", r.after_sb_1pri);
        let _ = writeln!(w, "    after-sb-2pri           {}", r.after_sb_2pri);
        let _ = writeln!(
            w,
            "    allow-two-primaries     {}",
            r.allow_two_primaries.map_bool()
        );
        let _ = writeln!(w, "    rate                    {}", u(&r.rate, "bytes/s"));
        for n in &r.nodes {
            let _ = writeln!(
                w,
                "    node {}: disk {} meta {} address {}",
                n.name, n.disk, n.meta, n.address
            );
        }
    }
    let _ = writeln!(w, "\nfence devices:");
    if c.fence_devices.is_empty() {
        let _ = writeln!(w, "  none");
    }
    for d in &c.fence_devices {
        let _ = writeln!(w, "  {} agent {} {}", d.name, d.agent, attrs_line(&d.attrs));
    }
    let rm = &c.rm;
    let _ = writeln!(w, "\nrm:");
    let _ = writeln!(
        w,
        "  status_poll_interval      {}",
        u(&rm.status_poll_interval, "s")
    );
    let _ = writeln!(w, "  status_child_max          {}", rm.status_child_max);
    let _ = writeln!(
        w,
        "  transition_throttling     {}",
        u(&rm.transition_throttling, "s")
    );
    let _ = writeln!(
        w,
        "  central_processing        {}",
        rm.central_processing.map_bool()
    );
    for d in &rm.failover_domains {
        let _ = writeln!(
            w,
            "  failoverdomain {}: ordered {} restricted {} nofailback {}",
            d.name,
            d.ordered.map_bool(),
            d.restricted.map_bool(),
            d.nofailback.map_bool()
        );
        for m in &d.nodes {
            let _ = writeln!(w, "    {} priority {}", m.name, m.priority);
        }
    }
    for r in &rm.resources {
        let _ = writeln!(w, "  resource {} {}", r.kind, attrs_line(&r.attrs));
    }
    for sv in &rm.services {
        let _ = writeln!(w, "  service {}:", sv.name);
        let _ = writeln!(w, "    domain                  {}", opt(&sv.domain));
        let _ = writeln!(w, "    autostart               {}", sv.autostart.map_bool());
        let _ = writeln!(w, "    exclusive               {}", sv.exclusive.map_bool());
        let _ = writeln!(w, "    recovery                {}", sv.recovery);
        let _ = writeln!(w, "    max_restarts            {}", sv.max_restarts);
        let _ = writeln!(
            w,
            "    restart_expire_time     {}",
            u(&sv.restart_expire_time, "s")
        );
        let _ = writeln!(w, "    depend                  {}", opt(&sv.depend));
        let order: Vec<String> = sv
            .start_sequence()
            .iter()
            .map(|r| format!("{} {}", r.kind, r.key().unwrap_or("?")))
            .collect();
        let _ = writeln!(w, "    start order             {}", order.join(" -> "));
    }
    for vm in &rm.vms {
        let _ = writeln!(w, "  vm {}:", vm.name);
        let _ = writeln!(w, "    domain                  {}", opt(&vm.domain));
        let _ = writeln!(w, "    autostart               {}", vm.autostart.map_bool());
        let _ = writeln!(w, "    exclusive               {}", vm.exclusive.map_bool());
        let _ = writeln!(w, "    recovery                {}", vm.recovery);
        let _ = writeln!(w, "    migrate                 {}", vm.migrate);
        let _ = writeln!(w, "    max_restarts            {}", vm.max_restarts);
        let _ = writeln!(
            w,
            "    restart_expire_time     {}",
            u(&vm.restart_expire_time, "s")
        );
        if !vm.attrs.is_empty() {
            let _ = writeln!(w, "    {}", attrs_line(&vm.attrs));
        }
    }
    let l = &c.logging;
    let _ = writeln!(w, "\nlogging:");
    let _ = writeln!(w, "  to_syslog                 {}", l.to_syslog.map_bool());
    let _ = writeln!(w, "  to_logfile                {}", l.to_logfile.map_bool());
    let _ = writeln!(w, "  syslog_facility           {}", l.syslog_facility);
    let _ = writeln!(w, "  syslog_priority           {}", l.syslog_priority);
    let _ = writeln!(w, "  logfile_priority          {}", l.logfile_priority);
    let _ = writeln!(w, "  logfile                   {}", l.logfile);
    let _ = writeln!(w, "  debug                     {}", l.debug.map_bool());
    let d = &c.dlm;
    let _ = writeln!(w, "\ndlm:");
    let _ = writeln!(
        w,
        "  enable_fencing            {}",
        d.enable_fencing.map_bool()
    );
    let _ = writeln!(
        w,
        "  enable_quorum             {}",
        d.enable_quorum.map_bool()
    );
    let _ = writeln!(
        w,
        "  enable_plock              {}",
        d.enable_plock.map_bool()
    );
    let _ = writeln!(w, "  plock_rate_limit          {}", d.plock_rate_limit);
    let _ = writeln!(
        w,
        "  plock_ownership           {}",
        d.plock_ownership.map_bool()
    );
    s
}

trait MapBool {
    fn map_bool(&self) -> Setting<u8>;
}

impl MapBool for Setting<bool> {
    /// Booleans print as 1/0, as cluster.conf writes them.
    fn map_bool(&self) -> Setting<u8> {
        Setting {
            value: u8::from(self.value),
            default: self.default,
        }
    }
}
