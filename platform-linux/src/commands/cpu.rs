//! The Linux backend of agent_core::commands::cpu (being written).
