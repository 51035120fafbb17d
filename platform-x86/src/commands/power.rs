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
use agent_core::schema::Command;
use agent_core::{Error, Result};

use crate::hw::acpi::{self, Fadt};
use crate::hw::{i8042, tsc};

/// ACPI power control.
pub struct AcpiPower {
    fadt: Option<Fadt>,
    s5: Option<(u8, u8)>,
}

impl AcpiPower {
    /// From what ACPI discovery found.
    pub fn new(fadt: Option<Fadt>, s5: Option<(u8, u8)>) -> Self {
        AcpiPower { fadt, s5 }
    }

    /// Power the machine off; returns only if that did not happen.
    pub fn power_off(&self) -> Result<()> {
        let (Some(f), Some(s5)) = (self.fadt, self.s5) else {
            return Err(Error::msg(format_args!(
                "cannot power off: no ACPI FADT or \\_S5 sleep state was found"
            )));
        };
        if f.pm1a_cnt == 0 {
            return Err(Error::msg(format_args!(
                "cannot power off: the FADT has no PM1a control block"
            )));
        }
        acpi::enter_sleep_state(&f, s5);
        tsc::delay_ms(1000);
        Err(Error::msg(format_args!(
            "ACPI power-off did not take effect"
        )))
    }

    /// Reset the machine; returns only if that did not happen.
    pub fn reset(&self) -> Result<()> {
        if let Some((gas, value)) = self.fadt.and_then(|f| f.reset) {
            acpi::write_register(gas, value);
            tsc::delay_ms(500);
        }
        // The keyboard controller's reset line.
        i8042::pulse_reset();
        tsc::delay_ms(1000);
        Err(Error::msg(format_args!("reset did not take effect")))
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
