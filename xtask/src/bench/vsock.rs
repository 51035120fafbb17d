//! The vsock half of `cargo xtask bench`: `qga` and Debian's `qemu-ga`, each in the same kind
//! of Linux guest (q35, TCG, the initramfs of the test suites, virtio-vsock through
//! `vhost-device-vsock`), driven through the hybrid-vsock socket by the same client.
//!
//! Why two guests and not two agents in one: the image runs its agents as `/usr/bin/qga`, so an
//! image built around `qemu-ga` is the reference guest unchanged, and both guests are booted
//! before any timing and measured alternately, round by round, like the host figures. What
//! the figures include: the whole path, client → unix socket → daemon → virtqueue → guest kernel
//! → agent, under TCG, so they compare the agents on one path rather than measure vsock.
//! Payloads are checked with SHA-256 after the round trip (written, then read back), so a fast
//! wrong answer never counts.

use std::time::Instant;

use qga_client::ClientError;
use serde_json::json;

use super::{Figure, Metric, payload, ping_pipelined, ping_sequential, print_table, sha256, short};
use ::tests::host_agent::{upstream_binary, upstream_missing};
use ::tests::linux_guest::{GuestImages, GuestOptions, LinuxGuest};
use ::tests::qemu::VirtioTransport;

/// Sequential pings per round (each crosses TCG twice).
const PINGS: usize = 500;
/// Pipelined pings in flight at once.
const IN_FLIGHT: usize = 500;
/// The file moved in each direction.
const FILE: usize = 16 << 20;
/// guest-file-read/write chunk.
const CHUNK: usize = 1 << 20;
/// Where the file lives in the guest (its root is a RAM file system).
const GUEST_FILE: &str = "/tmp/bench.bin";

/// `cargo xtask bench vsock` (and the second table of `cargo xtask bench`).
pub fn run(rounds: usize, ours: &std::path::Path) -> Result<(), String> {
    let upstream =
        upstream_binary().ok_or_else(|| format!("{} (cargo xtask setup)", upstream_missing()))?;
    let base = ::tests::paths::target_dir().join("bench-vsock");
    let mut guests = Vec::new();
    for (i, bin) in [ours, upstream.as_path()].into_iter().enumerate() {
        let dir = base.join(["qga", "qemu-ga"][i]);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let images = GuestImages::build_with(bin, &dir)?;
        let mut opts = GuestOptions::new(&images, true);
        opts.vsock = Some(VirtioTransport::Pci);
        let guest = LinuxGuest::boot(&opts)
            .map_err(|e| format!("{}'s guest did not boot: {e}", super::KINDS[i].label()))?;
        println!(
            "vsock: {}'s guest booted in {:.1}s",
            super::KINDS[i].label(),
            guest.boot_time.as_secs_f64()
        );
        guests.push(guest);
    }
    let payload = payload(FILE, 0x2545_F491_4F6C_DD1D);
    let digest = sha256(&payload);
    let mut m_lat = Metric::new("vsock: guest-ping round trip, sequential", "µs", false);
    let mut m_pipe = Metric::new(
        &format!("vsock: guest-ping pipelined ({IN_FLIGHT} in flight)"),
        "req/s",
        true,
    );
    let mut m_write = Metric::new("vsock: file write 16 MiB, 1 MiB chunks", "MiB/s", true);
    let mut m_read = Metric::new("vsock: file read 16 MiB, 1 MiB chunks", "MiB/s", true);
    let mut buf = Vec::with_capacity(FILE + CHUNK);
    for round in 0..rounds {
        println!("vsock round {}/{rounds}…", round + 1);
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &i in &order {
            let mut c = guests[i]
                .vsock_agent()
                .map_err(|e| format!("{}: {e}", super::KINDS[i].label()))?;
            c.set_timeout(std::time::Duration::from_secs(300));
            m_lat.samples[i].push(figure(ping_sequential(&mut c, PINGS)));
            m_pipe.samples[i].push(figure(ping_pipelined(&mut c, IN_FLIGHT)));
            let t0 = Instant::now();
            let wrote = c.push(&payload, GUEST_FILE, CHUNK);
            let write_s = t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let read = wrote.and_then(|()| c.pull_into(GUEST_FILE, CHUNK, &mut buf));
            let read_s = t0.elapsed().as_secs_f64();
            let checked = read.and_then(|()| {
                if sha256(&buf) == digest {
                    Ok(())
                } else {
                    Err(ClientError::Protocol(format!(
                        "SHA-256 mismatch after a round trip of {} bytes",
                        buf.len()
                    )))
                }
            });
            let mib = FILE as f64 / (1024.0 * 1024.0);
            match checked {
                Ok(()) => {
                    m_write.samples[i].push(Figure::Value(mib / write_s));
                    m_read.samples[i].push(Figure::Value(mib / read_s));
                }
                Err(e) => {
                    m_write.samples[i].push(Figure::NotAvailable(short(&e)));
                    m_read.samples[i].push(Figure::NotAvailable(short(&e)));
                }
            }
            let _ = c.execute(
                "guest-exec",
                Some(json!({"path": "/bin/rm", "arg": ["-f", GUEST_FILE]})),
            );
        }
    }
    drop(guests);
    println!();
    println!(
        "over vsock, each agent in a q35 Linux guest under TCG (hybrid socket of vhost-device-vsock):"
    );
    print_table(&[m_lat, m_pipe, m_write, m_read]);
    Ok(())
}

fn figure(r: Result<f64, ClientError>) -> Figure {
    match r {
        Ok(v) => Figure::Value(v),
        Err(e) => Figure::NotAvailable(short(&e)),
    }
}
