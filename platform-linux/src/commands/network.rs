//! The Linux backend of agent_core::commands::network (being written).
