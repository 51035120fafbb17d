//! The Linux backend of agent_core::commands::ssh (being written).
