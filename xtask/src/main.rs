//! `cargo xtask`: the project's commands (work in progress).
fn main() {}
