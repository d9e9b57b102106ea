//! Portcullis portal: one governed MCP endpoint over many upstream MCP servers.
//!
//! The request path: HTTP (axum) -> body validation -> session sealing -> rmcp's Streamable
//! HTTP service (both MCP eras; Origin, Host and header checks) -> [`portal::PortalHandler`]
//! (aggregated lists; every call through [`portal::pipeline`]) -> [`upstream`] connections
//! (Streamable HTTP, legacy SSE, stdio). [`codemode`] runs model-written JavaScript whose tool
//! calls go through the same pipeline. [`llm`] is the LLM gateway on the same listener
//! (`/llm/...`), with the same authentication.

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod codemode;
pub mod config;
pub mod dlp;
pub mod error;
pub mod http;
pub mod identity;
pub mod inspect;
#[cfg(test)]
mod layering;
pub mod llm;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod portal;
pub mod shadow;
pub mod tls;
pub mod upstream;

pub use error::{Error, Result};
