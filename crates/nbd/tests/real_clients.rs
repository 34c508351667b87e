//! The server against real NBD clients: nbdinfo, nbdcopy (libnbd-bin), qemu-img (qemu-utils).

mod common;

use std::process::Command;

use common::*;

const SIZE: usize = 8 << 20;

#[test]
fn nbdinfo_shows_size_name_and_list() {
    require("nbdinfo", "libnbd-bin");
    let d = Scratch::new("info");
    let img = d.path("disk.img");
    std::fs::write(&img, vec![0u8; SIZE]).unwrap();
    let s = serve_file(&img, "disk0");
    let js = run(Command::new("nbdinfo").arg("--json").arg(s.url("disk0")));
    let v: serde_json::Value = serde_json::from_str(&js).unwrap();
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], SIZE as u64, "{js}");
    assert_eq!(e["export-name"], "disk0");
    assert_eq!(e["description"], "quorate test export");
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["can_flush"], true);
    assert_eq!(e["can_fua"], true);
    assert_eq!(e["can_trim"], true);
    assert_eq!(e["can_zero"], true);
    assert_eq!(e["block_size_maximum"], 32 << 20);
    assert_eq!(v["protocol"], "newstyle-fixed");
    let ro = run(Command::new("nbdinfo").arg("--json").arg(s.url("ro")));
    let v: serde_json::Value = serde_json::from_str(&ro).unwrap();
    assert_eq!(v["exports"][0]["is_read_only"], true);
    let list = run(Command::new("nbdinfo").arg("--list").arg(s.url("")));
    assert!(list.contains("disk0") && list.contains("ro"), "{list}");
    let bad = Command::new("nbdinfo").arg(s.url("nope")).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    // libnbd maps NBD_REP_ERR_UNKNOWN to ENOENT.
    assert!(
        err.contains("No such file or directory") && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn nbdcopy_round_trip() {
    require("nbdcopy", "libnbd-bin");
    let d = Scratch::new("copy");
    let src = d.path("src.img");
    let disk = d.path("disk.img");
    let back = d.path("back.img");
    let data = image_bytes(SIZE, 7);
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&disk, vec![0xEEu8; SIZE]).unwrap();
    let s = serve_file(&disk, "disk");
    // Into the export (nbdcopy uses multi-conn, pipelined writes, zeroing and a final flush).
    run(Command::new("nbdcopy").arg(&src).arg(s.url("disk")));
    assert!(
        std::fs::read(&disk).unwrap() == data,
        "export file differs from source"
    );
    // And back out.
    run(Command::new("nbdcopy").arg(s.url("disk")).arg(&back));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "copied-out image differs"
    );
    // Writing to the read-only export fails.
    let o = Command::new("nbdcopy")
        .arg(&src)
        .arg(s.url("ro"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "write to read-only export succeeded");
}

#[test]
fn qemu_img_convert_and_compare() {
    require("qemu-img", "qemu-utils");
    let d = Scratch::new("qemu");
    let src = d.path("src.img");
    let disk = d.path("disk.img");
    let data = image_bytes(SIZE, 11);
    std::fs::write(&src, &data).unwrap();
    std::fs::write(&disk, vec![0u8; SIZE]).unwrap();
    let s = serve_file(&disk, "disk");
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(s.url("disk")));
    assert!(std::fs::read(&disk).unwrap() == data);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(s.url("disk")));
    // One changed byte must be seen through NBD.
    let mut changed = data.clone();
    changed[SIZE / 2 + 3] ^= 0x5a;
    std::fs::write(&src, &changed).unwrap();
    let o = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(s.url("disk"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Read the export back into a file through qemu.
    let out = d.path("out.img");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(s.url("disk"))
        .arg(&out));
    assert!(std::fs::read(&out).unwrap() == data);
}

#[test]
fn unix_socket_listener_serves_nbdinfo_and_nbdcopy() {
    require("nbdcopy", "libnbd-bin");
    let d = Scratch::new("unix");
    let img = d.path("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let sock = d.path("nbd.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let backend = std::sync::Arc::new(nbd::FileBackend::open(&img, false).unwrap());
    let server = nbd::Server::new(vec![nbd::Export::new("u", backend)]);
    let l = rt
        .block_on(async { tokio::net::UnixListener::bind(&sock) })
        .unwrap();
    let task = rt.spawn(server.clone().serve_unix(l));
    let url = format!("nbd+unix:///u?socket={}", sock.display());
    let info = run(Command::new("nbdinfo").arg("--size").arg(&url));
    assert_eq!(info.trim(), (1u64 << 20).to_string());
    let src = d.path("src.img");
    let data = image_bytes(1 << 20, 3);
    std::fs::write(&src, &data).unwrap();
    run(Command::new("nbdcopy").arg(&src).arg(&url));
    assert!(std::fs::read(&img).unwrap() == data);
    server.shutdown();
    rt.block_on(task).unwrap().unwrap();
}
