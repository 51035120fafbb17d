//! `qga`: the Linux guest agent, a drop-in for `qemu-ga` (being written).

mod commands;

fn main() {
    let _ = commands::LinuxPlatform::default();
}
