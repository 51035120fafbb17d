//! The Linux backend of agent_core::commands::user (being written).
