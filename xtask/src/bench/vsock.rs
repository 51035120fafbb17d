//! The vsock half of `cargo xtask bench`: `qga` and Debian's `qemu-ga`, each in the same kind
//! of Linux guest (q35, TCG, the initramfs of the test suites, virtio-vsock through
//! `vhost-device-vsock`), driven through the hybrid-vsock socket by the same client.
//!
//! Why two guests and not two agents in one: the image runs its agents as `/usr/bin/qga`, so an
//! image built around `qemu-ga` is the reference guest unchanged, and both guests are booted
//! before any timing and measured alternately, round by round, like the host figures. What
//! the figures include: the whole path, client → unix socket → daemon → virtqueue → guest kernel
//! → agent, under TCG, so they compare the agents on one path rather than measure vsock.
//! The agents run without `-v`: with it qemu-ga logs the data of every request it reads (a
//! 1 MiB `guest-file-write` is 1.4 MB of log), which is not what is compared.
//! Payloads are checked with SHA-256 after the round trip (written, then read back), so a fast
//! wrong answer never counts.
//!
//! The floor: under TCG the path, not the agent, may set the figures, and a goal stated as a
//! ratio between two agents can then lie below what the path allows. So each guest also runs
//! `vsock-floor` (tests/vsock-floor: blocking `read(2)`/`write(2)` with 1 MiB buffers and
//! nothing else), reached through the same daemon and hybrid socket, and each round measures
//! its round trip of a ping-sized message and its raw MiB/s each way, next to the agents. The
//! agents' file figures count payload bytes while the wire carries base64 (4 bytes per 3), so
//! an agent's payload MiB/s can reach at most 0.75 of the floor's raw MiB/s.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use qga_client::ClientError;

use super::{
    Figure, Metric, fmt_figure, payload, ping_pipelined, ping_sequential, print_table, sha256,
    short,
};
use ::tests::host_agent::{upstream_binary, upstream_missing};
use ::tests::initramfs::{InitramfsSpec, VSOCK_FLOOR_PORT, build_initramfs, build_vsock_floor};
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
    let floor_bin = build_vsock_floor()?;
    let base = ::tests::paths::target_dir().join("bench-vsock");
    let mut guests = Vec::new();
    for (i, bin) in [ours, upstream.as_path()].into_iter().enumerate() {
        let dir = base.join(["qga", "qemu-ga"][i]);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let images = GuestImages::build_with(bin, &dir)?;
        let mut spec = InitramfsSpec::new(bin, dir.join("initramfs-floor.cpio"))?;
        spec.vsock_floor = Some(floor_bin.clone());
        let mut opts = GuestOptions::new(&images, true);
        opts.initrd = build_initramfs(&spec)?;
        // Without `-v`: with it, qemu-ga writes every request's data to its log.
        opts.append.push_str(&format!(
            " qga.vsock_floor={VSOCK_FLOOR_PORT} qga.vsock_quiet"
        ));
        opts.vsock = Some(VirtioTransport::Pci);
        let guest = LinuxGuest::boot(&opts)
            .map_err(|e| format!("{}'s guest did not boot: {e}", super::KINDS[i].label()))?;
        // Under TCG a clock read is cheap only from the TSC; with another clock source every
        // read is an exit to QEMU, which shows in the agents' CPU figures.
        let clock = guest
            .agent()
            .and_then(|mut c| {
                c.run(
                    "/bin/cat",
                    &["/sys/devices/system/clocksource/clocksource0/current_clocksource"],
                    Duration::from_secs(60),
                )
                .map_err(|e| e.to_string())
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        println!(
            "vsock: {}'s guest booted in {:.1}s (clock source {clock})",
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
    let mut m_cpu_ping = Metric::new("vsock: agent CPU in the guest per ping", "µs", false);
    let mut m_cpu_write = Metric::new("vsock: agent CPU in the guest, write", "ms/MiB", false);
    let mut m_cpu_read = Metric::new("vsock: agent CPU in the guest, read", "ms/MiB", false);
    let mut floors: [Floor; 2] = Default::default();
    let mut buf = Vec::with_capacity(FILE + CHUNK);
    let mut sink = vec![0u8; 1 << 20];
    for round in 0..rounds {
        println!("vsock round {}/{rounds}…", round + 1);
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for &i in &order {
            let mut c = guests[i]
                .vsock_agent()
                .map_err(|e| format!("{}: {e}", super::KINDS[i].label()))?;
            c.set_timeout(std::time::Duration::from_secs(300));
            let mut serial = guests[i].agent()?;
            let mut cpu = AgentCpu::start(&mut serial, AGENT_PID);
            let mut floor_cpu = AgentCpu::start(&mut serial, FLOOR_PID);
            // Each floor step runs just before the agent's matching step, so both see the
            // same moment of this shared machine's load.
            let _ = floor_cpu.step(&mut serial, 1.0);
            note("round trip", i, floors[i].round_trip(&guests[i]));
            floors[i]
                .cpu_rtt
                .push(floor_cpu.step(&mut serial, PINGS as f64 / 1000.0));
            let _ = cpu.step(&mut serial, 1.0);
            m_lat.samples[i].push(figure(ping_sequential(&mut c, PINGS)));
            m_cpu_ping.samples[i].push(cpu.step(&mut serial, PINGS as f64 / 1000.0));
            m_pipe.samples[i].push(figure(ping_pipelined(&mut c, IN_FLIGHT)));
            let mib = FILE as f64 / (1024.0 * 1024.0);
            let _ = floor_cpu.step(&mut serial, 1.0);
            note("write", i, floors[i].write(&guests[i], &payload));
            floors[i].cpu_write.push(floor_cpu.step(&mut serial, mib));
            let _ = cpu.step(&mut serial, 1.0); // the pipelined pings and the floor
            let t0 = Instant::now();
            let wrote = c.push(&payload, GUEST_FILE, CHUNK);
            let write_s = t0.elapsed().as_secs_f64();
            m_cpu_write.samples[i].push(cpu.step(&mut serial, mib));
            let _ = floor_cpu.step(&mut serial, 1.0);
            note("read", i, floors[i].read(&guests[i], &mut sink));
            floors[i].cpu_read.push(floor_cpu.step(&mut serial, mib));
            let _ = cpu.step(&mut serial, 1.0);
            let t0 = Instant::now();
            let read = wrote.and_then(|()| c.pull_into(GUEST_FILE, CHUNK, &mut buf));
            let read_s = t0.elapsed().as_secs_f64();
            m_cpu_read.samples[i].push(cpu.step(&mut serial, mib));
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
            // Waited for and its status read, so the agent forgets the child (an agent that
            // tracks a child has work on every turn of its loop).
            let _ = c.run("/bin/rm", &["-f", GUEST_FILE], Duration::from_secs(60));
        }
    }
    drop(guests);
    println!();
    println!(
        "over vsock, each agent in a q35 Linux guest under TCG (hybrid socket of vhost-device-vsock):"
    );
    let agents = [
        m_lat.summary(0),
        m_lat.summary(1),
        m_write.summary(0),
        m_write.summary(1),
        m_read.summary(0),
        m_read.summary(1),
        m_cpu_ping.summary(0),
        m_cpu_ping.summary(1),
        m_cpu_write.summary(0),
        m_cpu_write.summary(1),
        m_cpu_read.summary(0),
        m_cpu_read.summary(1),
    ];
    print_table(&[
        m_lat,
        m_pipe,
        m_write,
        m_read,
        m_cpu_ping,
        m_cpu_write,
        m_cpu_read,
    ]);
    print_floor(&floors, &agents);
    Ok(())
}

/// The vsock agent's CPU time in the guest (user and kernel, from `/proc/PID/schedstat`), so
/// the figures say how much of a step was the agent working and how much was waiting on the
/// path. It is read through the guest's other agent, on virtio-serial (the same binary), so
/// reading it costs the measured agent nothing.
struct AgentCpu {
    /// The PID file of the process measured.
    pid_file: &'static str,
    last: Result<f64, String>,
}

impl AgentCpu {
    /// `serial`: a client of the guest's virtio-serial agent (QEMU's chardev takes one client
    /// at a time, so every reading in a guest shares it).
    fn start(serial: &mut qga_client::Client, pid_file: &'static str) -> Self {
        AgentCpu {
            pid_file,
            last: cpu_ms(serial, pid_file),
        }
    }

    /// CPU ms since the last reading, divided by `per` (the step's units, so that µs per ping
    /// or ms per MiB come out).
    fn step(&mut self, serial: &mut qga_client::Client, per: f64) -> Figure {
        let now = cpu_ms(serial, self.pid_file);
        let fig = match (&self.last, &now) {
            (Ok(a), Ok(b)) => Figure::Value((b - a) / per),
            (Err(e), _) | (_, Err(e)) => Figure::NotAvailable(e.clone()),
        };
        self.last = now;
        fig
    }
}

/// The vsock agent's PID file (tests/src/initramfs.rs).
const AGENT_PID: &str = "/run/qga2.pid";
/// The floor program's PID file.
const FLOOR_PID: &str = "/run/vsock-floor.pid";

/// CPU time so far of the process whose PID is in `pid_file`, ms.
fn cpu_ms(serial: &mut qga_client::Client, pid_file: &str) -> Result<f64, String> {
    let out = serial
        .run(
            "/bin/sh",
            &["-c", &format!("cat /proc/$(cat {pid_file})/schedstat")],
            Duration::from_secs(60),
        )
        .map_err(|e| short(&e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse::<f64>().ok())
        .map(|ns| ns / 1e6)
        .ok_or_else(|| format!("schedstat: {text:?}"))
}

/// The floor's samples in one guest, one per round.
#[derive(Default)]
struct Floor {
    /// Mean round trip of a ping-sized message, µs.
    rtt: Vec<f64>,
    /// Host to guest, raw MiB/s.
    write: Vec<f64>,
    /// Guest to host, raw MiB/s.
    read: Vec<f64>,
    /// The floor program's CPU in the guest per echo, µs.
    cpu_rtt: Vec<Figure>,
    /// The floor program's CPU in the guest per raw MiB, each way.
    cpu_write: Vec<Figure>,
    cpu_read: Vec<Figure>,
}

/// The size of `{"execute":"guest-ping"}`, what the agents' round trip sends.
const PING_SIZE: usize = 24;

impl Floor {
    /// A connection to the guest's floor program, its mode chosen by `head`.
    fn connect(guest: &LinuxGuest, head: &[u8]) -> Result<std::os::unix::net::UnixStream, String> {
        let daemon_socket = match guest.vsock_address() {
            Some(qga_client::Address::VsockUds { path, .. }) => path,
            _ => return Err("the guest has no hybrid vsock socket".into()),
        };
        let c = qga_client::Client::connect_hybrid_vsock(
            &daemon_socket,
            VSOCK_FLOOR_PORT,
            Duration::from_secs(60),
        )
        .map_err(|e| e.to_string())?;
        let mut s = c.stream().try_clone().map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(300)))
            .map_err(|e| e.to_string())?;
        s.write_all(head).map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// `PINGS` round trips of a ping-sized message: mean µs.
    fn round_trip(&mut self, guest: &LinuxGuest) -> Result<(), String> {
        let mut s = Self::connect(guest, b"e")?;
        let msg = [b'x'; PING_SIZE];
        let mut back = [0u8; PING_SIZE];
        let t0 = Instant::now();
        for _ in 0..PINGS {
            s.write_all(&msg).map_err(|e| e.to_string())?;
            s.read_exact(&mut back).map_err(|e| e.to_string())?;
        }
        self.rtt
            .push(t0.elapsed().as_secs_f64() * 1e6 / PINGS as f64);
        Ok(())
    }

    /// `FILE` bytes to the guest, until the guest says it has them all: MiB/s.
    fn write(&mut self, guest: &LinuxGuest, data: &[u8]) -> Result<(), String> {
        let mut head = vec![b's'];
        head.extend_from_slice(&(data.len() as u64).to_le_bytes());
        let mut s = Self::connect(guest, &head)?;
        let t0 = Instant::now();
        s.write_all(data).map_err(|e| e.to_string())?;
        let mut k = [0u8; 1];
        s.read_exact(&mut k).map_err(|e| e.to_string())?;
        self.write
            .push(data.len() as f64 / (1024.0 * 1024.0) / t0.elapsed().as_secs_f64());
        Ok(())
    }

    /// `FILE` bytes from the guest: MiB/s.
    fn read(&mut self, guest: &LinuxGuest, sink: &mut [u8]) -> Result<(), String> {
        let mut head = vec![b'r'];
        head.extend_from_slice(&(FILE as u64).to_le_bytes());
        let mut s = Self::connect(guest, &head)?;
        let mut got = 0usize;
        let t0 = Instant::now();
        while got < FILE {
            match s.read(sink).map_err(|e| e.to_string())? {
                0 => return Err(format!("the floor closed after {got} of {FILE} bytes")),
                n => got += n,
            }
        }
        self.read
            .push(FILE as f64 / (1024.0 * 1024.0) / t0.elapsed().as_secs_f64());
        Ok(())
    }
}

/// Says so when a floor measurement failed (the agents' figures stand without it).
fn note(what: &str, i: usize, r: Result<(), String>) {
    if let Err(e) = r {
        println!(
            "  note: the floor's {what} in {}'s guest was not measured: {e}",
            super::KINDS[i].label()
        );
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// The floor in each guest, and each agent as a ratio of its own guest's floor. `agents`:
/// round trip, write and read, each for qga then qemu-ga.
fn print_floor(floors: &[Floor; 2], agents: &[Figure; 12]) {
    println!();
    println!(
        "the floor on the same path (vsock-floor in the same guest: blocking read/write, 1 MiB \
         buffers), median of rounds; agent / floor of its own guest:"
    );
    println!(
        "{:<42} {:>6} {:>12} {:>12} {:>9} {:>9}",
        "floor metric", "unit", "qga's VM", "qemu-ga's", "qga/fl", "qemu-ga/fl"
    );
    let rows = [
        ("vsock floor: round trip, 24-byte echo", "µs"),
        ("vsock floor: host -> guest 16 MiB, raw", "MiB/s"),
        ("vsock floor: guest -> host 16 MiB, raw", "MiB/s"),
        ("vsock floor: CPU in the guest per echo", "µs"),
        ("vsock floor: CPU in the guest, host -> guest", "ms/MiB"),
        ("vsock floor: CPU in the guest, guest -> host", "ms/MiB"),
    ];
    let values = |v: &[Figure]| -> Vec<f64> {
        v.iter()
            .filter_map(|f| match f {
                Figure::Value(x) => Some(*x),
                Figure::NotAvailable(_) => None,
            })
            .collect()
    };
    let pick = |f: &Floor, r: usize| match r {
        0 => median(&f.rtt),
        1 => median(&f.write),
        2 => median(&f.read),
        3 => median(&values(&f.cpu_rtt)),
        4 => median(&values(&f.cpu_write)),
        _ => median(&values(&f.cpu_read)),
    };
    for (r, (name, unit)) in rows.iter().enumerate() {
        let fl = [pick(&floors[0], r), pick(&floors[1], r)];
        let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| fmt_figure(&Figure::Value(v)));
        let ratio = |i: usize| match (&agents[2 * r + i], fl[i]) {
            (Figure::Value(a), Some(f)) if f > 0.0 => format!("{:.2}", a / f),
            _ => "n/a".to_string(),
        };
        println!(
            "{:<42} {:>6} {:>12} {:>12} {:>9} {:>9}",
            name,
            unit,
            cell(fl[0]),
            cell(fl[1]),
            ratio(0),
            ratio(1)
        );
    }
    println!(
        "  (file figures count payload bytes and carry base64 on the wire, 4 bytes per 3: an \
         agent's file MiB/s can reach at most 0.75 of the raw floor, and its CPU per payload MiB \
         includes 1.33 MiB of wire)"
    );
}

fn figure(r: Result<f64, ClientError>) -> Figure {
    match r {
        Ok(v) => Figure::Value(v),
        Err(e) => Figure::NotAvailable(short(&e)),
    }
}
