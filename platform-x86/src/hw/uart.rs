//! The 16550 UARTs, through the `uart_16550` crate.
//!
//! Data is always moved by polling the FIFOs; the receive interrupt, when the agent's port
//! enables it ([`Uart::enable_rx_interrupt`]), only wakes the halted CPU (see
//! [`super::interrupts`]) so that an idle agent need not spin. The log port never interrupts.

use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;
use uart_16550::{BaudRate, Config};

/// COM1's I/O base.
pub const COM1: u16 = 0x3f8;
/// COM2's I/O base.
pub const COM2: u16 = 0x2f8;

/// A UART, read and written by polling.
pub struct Uart {
    dev: Uart16550<PioBackend>,
}

impl Uart {
    /// Probe and initialise the UART at `base` (115200 8N1, FIFOs on, interrupts off);
    /// `None` if no UART answers there.
    pub fn open(base: u16) -> Option<Self> {
        // SAFETY: COM1/COM2 bases are the standard ISA UART ports, owned by this image alone.
        let mut dev = unsafe { Uart16550::new_port(base) }.ok()?;
        let config = Config {
            baud_rate: BaudRate::Baud115200,
            ..Config::DEFAULT
        };
        dev.init(config).ok()?;
        Some(Uart { dev })
    }

    /// A handle on an already initialised UART (for the log, written from anywhere).
    pub fn attach(base: u16) -> Option<Self> {
        // SAFETY: as in `open`; the caller initialised the UART before.
        let dev = unsafe { Uart16550::new_port(base) }.ok()?;
        Some(Uart { dev })
    }

    /// Raise the UART's interrupt line when received data is waiting (the "data ready" and
    /// FIFO time-out interrupts; OUT2, which gates the line on a PC, is set by `open`).
    pub fn enable_rx_interrupt(&mut self) {
        self.dev
            .enable_interrupts(uart_16550::spec::registers::IER::DATA_READY);
    }

    /// Read what is waiting, up to `buf.len()`; 0 if nothing.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        self.dev.receive_bytes(buf)
    }

    /// Send all of `bytes`, waiting for FIFO room.
    pub fn write_all(&mut self, bytes: &[u8]) {
        self.dev.send_bytes_exact(bytes);
    }
}
