//! `guest-shutdown` through ACPI; suspend is unsupported.
//!
//! Power-off (`powerdown`, and `halt`, which on bare metal has nothing to halt to but the
//! power switch) writes `SLP_TYPa << 10 | SLP_EN` to the FADT's PM1a control block (and PM1b
//! if present), with `SLP_TYPa` from the DSDT's `\_S5` package; QEMU then ends the VM as a
//! guest shutdown (exit status 0). `reboot` writes the FADT reset register when the firmware
//! declares one (QEMU: 0x06 to port 0xCF9), else pulses the keyboard controller's reset line.
//! QEMU resets the machine, or exits with `-no-reboot`. Success sends no response, as upstream;
//! if the machine is still running a second later the command fails with a message.

use agent_core::commands::power::{Power, ShutdownMode, SuspendMode};
use agent_core::commands::{Error, Result};
use agent_core::schema::Command;

use crate::hw::acpi::{Fadt, Gas};
use crate::hw::{inb, inw, outb, outw, pci, tsc};

/// ACPI power control.
pub struct AcpiPower {
    fadt: Option<Fadt>,
    s5: Option<(u8, u8)>,
}

const SLP_EN: u16 = 1 << 13;

impl AcpiPower {
    /// From what ACPI discovery found.
    pub fn new(fadt: Option<Fadt>, s5: Option<(u8, u8)>) -> Self {
        AcpiPower { fadt, s5 }
    }

    fn wait(ms: u64) {
        let start = tsc::rdtsc();
        let limit = tsc::hz() / 1000 * ms;
        while tsc::rdtsc().wrapping_sub(start) < limit {
            core::hint::spin_loop();
        }
    }

    /// Power the machine off; returns only if that did not happen.
    pub fn power_off(&self) -> Result<()> {
        let (Some(f), Some((a, b))) = (self.fadt, self.s5) else {
            return Err(Error::msg(format_args!(
                "cannot power off: no ACPI FADT or \\_S5 sleep state was found"
            )));
        };
        if f.pm1a_cnt == 0 {
            return Err(Error::msg(format_args!(
                "cannot power off: the FADT has no PM1a control block"
            )));
        }
        // SAFETY: PM1a/PM1b control and the SMI command port are the ACPI fixed-hardware
        // registers the FADT names for exactly this purpose; enabling ACPI mode and writing
        // SLP_TYP|SLP_EN is the documented power-off sequence.
        unsafe {
            if inw(f.pm1a_cnt) & 1 == 0 && f.smi_cmd != 0 && f.acpi_enable != 0 {
                outb(f.smi_cmd as u16, f.acpi_enable);
                for _ in 0..300 {
                    if inw(f.pm1a_cnt) & 1 != 0 {
                        break;
                    }
                    Self::wait(1);
                }
            }
            outw(f.pm1a_cnt, ((a as u16 & 7) << 10) | SLP_EN);
            if f.pm1b_cnt != 0 {
                outw(f.pm1b_cnt, ((b as u16 & 7) << 10) | SLP_EN);
            }
        }
        Self::wait(1000);
        Err(Error::msg(format_args!(
            "ACPI power-off did not take effect"
        )))
    }

    /// Reset the machine; returns only if that did not happen.
    pub fn reset(&self) -> Result<()> {
        if let Some((gas, value)) = self.fadt.and_then(|f| f.reset) {
            write_gas(gas, value);
            Self::wait(500);
        }
        // The keyboard controller's reset line: wait for its input buffer, then pulse.
        // SAFETY: ports 0x64 is the i8042 status/command port; 0xFE is its "pulse reset"
        // command, which is what it is used for here.
        unsafe {
            for _ in 0..100_000 {
                if inb(0x64) & 0x02 == 0 {
                    break;
                }
            }
            outb(0x64, 0xfe);
        }
        Self::wait(1000);
        Err(Error::msg(format_args!("reset did not take effect")))
    }
}

/// Write `value` to an ACPI generic address (the reset register).
fn write_gas(gas: Gas, value: u8) {
    match gas.space {
        // SAFETY: the FADT's reset register in system I/O space; writing the reset value is
        // what it is declared for.
        1 => unsafe { outb(gas.address as u16, value) },
        0 if gas.address != 0 && gas.address < crate::hw::mem::MAPPED_LIMIT => {
            // SAFETY: the FADT's memory-mapped reset register, identity-mapped; a volatile
            // byte write of the declared reset value.
            unsafe { (gas.address as usize as *mut u8).write_volatile(value) }
        }
        2 => {
            // PCI configuration space of bus 0: device, function, offset in the address.
            let a = pci::Address {
                bus: 0,
                device: (gas.address >> 32) as u8,
                function: (gas.address >> 16) as u8,
            };
            let off = gas.address as u8;
            let shift = (off & 3) * 8;
            let old = pci::read32(a, off);
            pci::write32(a, off, (old & !(0xff << shift)) | (value as u32) << shift);
        }
        _ => {}
    }
}

impl Power for AcpiPower {
    fn supports(&self, cmd: Command) -> bool {
        cmd == Command::GuestShutdown
    }

    fn shutdown(&mut self, mode: ShutdownMode) -> Result<()> {
        crate::log!("guest-shutdown: {}", mode.as_str());
        match mode {
            ShutdownMode::Powerdown | ShutdownMode::Halt => self.power_off(),
            ShutdownMode::Reboot => self.reset(),
        }
    }

    fn suspend(&mut self, _mode: SuspendMode) -> Result<()> {
        Err(Error::Unsupported)
    }
}
