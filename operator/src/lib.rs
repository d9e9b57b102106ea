//! Portcullis operator: kube-runtime controllers that turn McpServer, McpPortal and McpPolicy
//! resources into running portals, and `render`, which prints what they would apply.
//!
//! Layout: [`desired`] holds the pure `spec -> objects` functions; [`controller`] applies them
//! (server-side apply, one field manager), writes status and events; [`probe`] lists an MCP
//! server's tools; [`lease`] is leader election; [`metrics`] the reconcile metrics;
//! [`discovery`] finds in-cluster MCP endpoints no McpServer backs (opt-in); [`spend`] reads
//! portals' LLM spend for McpPolicy status.

pub mod controller;
pub mod desired;
pub mod discovery;
pub mod error;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod probe;
pub mod spend;
pub mod status;

pub use error::{Error, Result};
