//! Pipelined requests over the guest's character devices: every reply must arrive.
//!
//! qemu-ga 7.2 loses most replies to pipelined requests on virtio-serial and isa-serial (GLib
//! seeks the character device before a write, gets ESPIPE and drops the reply; reference and
//! README). `qga` must answer every request, in order, on both devices, also when the replies
//! are large and the host reads them slowly. One guest serves the whole file.

use std::time::{Duration, Instant};

use qga_client::{Client, parse_line};
use serde_json::{Value, json};
use tests::linux_guest::{GuestImages, GuestOptions, LinuxGuest};
use tests::paths::target_dir;

fn boot() -> LinuxGuest {
    let dir = target_dir().join("linux-guest-pipelining");
    std::fs::create_dir_all(&dir).unwrap();
    let images = GuestImages::build(&dir).unwrap_or_else(|e| panic!("guest images: {e}"));
    LinuxGuest::boot(&GuestOptions::new(&images, true))
        .unwrap_or_else(|e| panic!("the guest did not boot: {e}"))
}

/// Sends `n` copies of `request` (with ids 0..n) in one write, then reads `n` replies and
/// checks that they come back in order; returns the replies.
fn pipeline(c: &mut Client, request: &Value, n: usize, what: &str) -> Vec<Value> {
    let mut batch = Vec::new();
    for i in 0..n {
        let mut r = request.clone();
        r["id"] = json!(i);
        batch.extend_from_slice(r.to_string().as_bytes());
    }
    let mut writer = c.stream().try_clone().unwrap();
    let w = std::thread::spawn(move || {
        use std::io::Write;
        writer.write_all(&batch)
    });
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let line = c
            .read_line()
            .unwrap_or_else(|e| panic!("{what}: reply {i} of {n} missing: {e}"));
        let v = parse_line(&line).unwrap();
        assert_eq!(v["id"], json!(i), "{what}: reply {i}: {v}");
        assert!(v.get("return").is_some(), "{what}: reply {i}: {v}");
        out.push(v);
    }
    w.join().unwrap().unwrap();
    eprintln!(
        "{what}: {n} pipelined replies in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    out
}

#[test]
fn pipelined_requests_all_answered_on_virtio_and_isa_serial() {
    let guest = boot();
    let mut v = guest.agent().unwrap();
    v.set_timeout(Duration::from_secs(120));
    pipeline(
        &mut v,
        &json!({"execute": "guest-ping"}),
        2000,
        "virtio-serial ping",
    );
    // Large replies (a few KiB each) fill the port's buffers while more requests arrive.
    let infos = pipeline(
        &mut v,
        &json!({"execute": "guest-info"}),
        50,
        "virtio-serial info",
    );
    for i in &infos {
        assert!(
            i["return"]["supported_commands"]
                .as_array()
                .is_some_and(|l| l.len() > 40),
            "{i}"
        );
    }
    drop(v);

    let mut s = guest.isa_agent().unwrap();
    s.set_timeout(Duration::from_secs(120));
    pipeline(
        &mut s,
        &json!({"execute": "guest-ping"}),
        300,
        "isa-serial ping",
    );
    pipeline(
        &mut s,
        &json!({"execute": "guest-get-osinfo"}),
        20,
        "isa-serial osinfo",
    );
}
