//! Raw OS access: the one module of this crate that may use `unsafe`.
//!
//! Most system calls go through `rustix`, whose API is safe, and the rest of the crate calls
//! it directly. What rustix does not offer is wrapped here instead: glibc services with no
//! system call behind them (`getifaddrs`, `getpwnam_r`, `localtime_r`, `getloadavg`,
//! `inet_ntop`), calls whose safety depends on the process's state (`fork`, `sigaction`,
//! environment changes, adopting an inherited descriptor), and ioctls and socket addresses
//! rustix has no type for. Each is a small safe function that carries its `// SAFETY:`
//! argument, so the invariants are reviewed in one place and the commands and transports are
//! safe Rust; the crate root denies `unsafe_code` everywhere else, so it stays that way.

pub mod dev;
pub mod fs;
pub mod glibc;
pub mod net;
pub mod process;
pub mod signal;
