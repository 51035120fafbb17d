//! The Linux backend of agent_core::commands::exec (being written).
