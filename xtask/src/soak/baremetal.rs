//! `baremetal`: the bare-metal image gets garbage through COM1 and virtio-serial, then valid
//! requests; its stack high-water mark is read afterwards.

use super::common::*;

pub(super) fn baremetal(ctx: &mut Context, row: &mut Row) -> Result<(), String> {
    use ::tests::baremetal::{BareMetalVm, Machine, Transport};
    let total: u64 = if ctx.opts.quick { 1 << 20 } else { 100 << 20 };
    let mut inputs = Vec::new();
    let mut faults = Vec::new();
    for (machine, transport) in [
        (Machine::Pc, Transport::Com1),
        (Machine::Q35, Transport::Virtio),
    ] {
        let label = transport.name();
        let mut vm = BareMetalVm::boot(machine, transport, |_| {})?;
        let mut c = vm.client()?;
        let stack_of = |c: &mut Client| -> Option<(u64, u64)> {
            let o = c.run("stack", &[], Duration::from_secs(20)).ok()?;
            let t = String::from_utf8_lossy(&o.stdout).into_owned();
            let mut w = t.split_whitespace().filter_map(|x| x.parse::<u64>().ok());
            Some((w.next()?, w.next()?))
        };
        let before = stack_of(&mut c);
        let plan = GarbagePlan {
            total,
            max_string: 256 * 1024,
            limits_first: false,
            baseline_after: 0,
            seed: 0xba5e_0006 ^ total,
            stall: Duration::from_secs(120),
            budget: Duration::from_secs(if ctx.opts.quick { 120 } else { 5400 }),
            slow_link: matches!(transport, Transport::Com1),
        };
        let f = garbage_session(c.stream(), &plan, || {}, || {});
        garbage_into_row(row, label, &f);
        drop(c);
        // Then valid requests on a fresh connection: all answered.
        let after = (|| -> Result<(u64, Option<(u64, u64)>), String> {
            let mut c = vm.client()?;
            let mut n = 0;
            for i in 0..20u64 {
                let v = c
                    .request(&json!({"execute": "guest-sync", "arguments": {"id": i}, "id": i}))
                    .map_err(|e| e.to_string())?;
                if v == json!({"return": i, "id": i}) {
                    n += 1;
                }
            }
            c.info().map_err(|e| e.to_string())?;
            Ok((n, stack_of(&mut c)))
        })();
        match after {
            Ok((n, stack)) => {
                if n != 20 {
                    row.lost += 20 - n;
                    row.fail(format!(
                        "{label}: {n} of 20 requests right after the garbage"
                    ));
                }
                say(
                    &row.name,
                    &format!(
                        "{label}: stack high-water mark before {before:?}, after {stack:?} (used, size)"
                    ),
                );
                match stack {
                    Some((used, size)) => row.check(used < size, || {
                        format!("{label}: stack high-water mark {used} of {size}")
                    }),
                    None => row.fail(format!("{label}: no stack figure")),
                }
                faults.push(format!(
                    "{label}: {}; stack high-water mark {}",
                    short_garbage(&f),
                    stack
                        .map(|(u, s)| format!("{u} of {s} B"))
                        .unwrap_or_default()
                ));
            }
            Err(e) => {
                row.lost += 20;
                row.fail(format!("{label}: after the garbage: {e}"));
            }
        }
        if let Some(st) = vm.try_status() {
            row.crashes += 1;
            row.fail(format!("{label}: QEMU exited ({st}); {}", vm.log()));
        }
        inputs.push(format!(
            "{label}: {:.0} MiB + {} valid requests",
            mib(f.bytes),
            f.valid + 20
        ));
    }
    row.inputs = inputs.join("; ");
    row.faults = faults.join("; ");
    Ok(())
}
