//! The Linux backend of agent_core::commands::system (being written).
