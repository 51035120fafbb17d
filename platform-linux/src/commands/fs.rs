//! The Linux backend of agent_core::commands::fs (being written).
