//! The Linux backend of agent_core::commands::disk (being written).
