//! `qga`: the Linux guest agent (work in progress).
fn main() {}
