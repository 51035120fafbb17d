//! The bare-metal part of `cargo xtask bench`: the image over virtio-vsock against the image
//! over virtio-console, on `microvm` (virtio-mmio) and on `q35` (PCI), in one run.
//!
//! Why these pairs: both channels run the same engine and the same file store in the same VM
//! kind, so the ratio is the channel's cost (driver, device model, host path: vsock goes
//! through `vhost-device-vsock` and a unix socket, virtio-console through QEMU's chardev),
//! not the agent's. There is no `qemu-ga` on bare metal to compare with. Each round boots a
//! fresh VM per pair member (QEMU start → first answer is one of the figures), alternating the
//! members so a noisy moment of the shared machine falls on both; the median is printed.

use std::time::Duration;

use ::tests::baremetal::{FILE_BYTES, Machine, PINGS, Transport, measure_transport};

/// One figure of one channel: boot to first answer, mean ping round trip, read MiB/s.
#[derive(Clone, Copy)]
struct Sample {
    first: Duration,
    ping: Duration,
    mib_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `cargo xtask bench baremetal` (and the last table of `cargo xtask bench`).
pub fn run(rounds: usize) -> Result<(), String> {
    let image = ::tests::baremetal::release_image()?;
    println!("bare metal: {}", image.display());
    for (machine, label) in [
        (Machine::Microvm, "microvm (virtio-mmio)"),
        (Machine::Q35, "q35 (PCI)"),
    ] {
        let mut samples: [Vec<Sample>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            // Alternate which channel goes first in a round.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let transport = [Transport::Vsock, Transport::Virtio][i];
                let (first, pings, mib_s) = measure_transport(machine, transport)
                    .map_err(|e| format!("{label}, {}: {e}", transport.name()))?;
                samples[i].push(Sample {
                    first,
                    ping: pings / PINGS,
                    mib_s,
                });
            }
        }
        let fig = |i: usize, f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
        let rows: [(&str, f64, f64, bool); 3] = [
            (
                "QEMU start -> first answer (ms)",
                fig(0, |s| s.first.as_secs_f64() * 1e3),
                fig(1, |s| s.first.as_secs_f64() * 1e3),
                false,
            ),
            (
                "ping round trip, sequential (ms)",
                fig(0, |s| s.ping.as_secs_f64() * 1e3),
                fig(1, |s| s.ping.as_secs_f64() * 1e3),
                false,
            ),
            (
                "guest-file-read (MiB/s)",
                fig(0, |s| s.mib_s),
                fig(1, |s| s.mib_s),
                true,
            ),
        ];
        println!();
        println!(
            "bare metal on {label}, median of {rounds} round(s); {PINGS} pings, a {} KiB file \
             read 5 times in 48 KiB requests",
            FILE_BYTES / 1024
        );
        println!(
            "  {:<34} {:>12} {:>16} {:>8}",
            "", "vsock", "virtio-console", "ratio"
        );
        for (what, vsock, console, higher_is_better) in rows {
            let better = if (vsock > console) == higher_is_better {
                "vsock"
            } else {
                "console"
            };
            println!(
                "  {what:<34} {vsock:>12.2} {console:>16.2} {:>7.2}x  ({better} better)",
                vsock / console
            );
        }
    }
    Ok(())
}
