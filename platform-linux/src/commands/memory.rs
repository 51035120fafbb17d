//! The Linux backend of agent_core::commands::memory (being written).
