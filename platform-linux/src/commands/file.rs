//! The Linux backend of agent_core::commands::file (being written).
