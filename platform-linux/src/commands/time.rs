//! The Linux backend of agent_core::commands::time (being written).
