//! The Linux backend of agent_core::commands::power (being written).
