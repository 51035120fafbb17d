//! The bare-metal x86_64 agent image (work in progress).
#![cfg_attr(not(test), no_std)]
