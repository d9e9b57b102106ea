//! Portcullis portal: one governed MCP endpoint over many upstream MCP servers.
//!
//! The request path: HTTP (axum) -> session sealing -> rmcp's Streamable HTTP service (both MCP
//! eras; Origin, Host, size and header checks) -> [`portal::PortalHandler`] (aggregated lists,
//! routed calls) -> [`upstream`] connections (Streamable HTTP, legacy SSE, stdio).

pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod policy;
pub mod portal;
pub mod upstream;

pub use error::{Error, Result};
