//! Upstream MCP servers: connecting, health, reconnects with backoff, and their catalogs.
//!
//! Each upstream has one supervisor task that connects (Streamable HTTP in either protocol era,
//! legacy HTTP+SSE, or a stdio child process), fetches the lists, and then watches the
//! connection. A server that is down, slow or answers garbage is marked `down` with the reason:
//! its tools leave the portal's lists and calls to it fail at once, while the supervisor retries
//! with exponential backoff. Nothing one upstream does can stall another.
//!
//! The files, by concern: [`registry`] (the set of upstreams, each one's state and status),
//! [`supervisor`] (the per-upstream task: connect, watch, reconnect with backoff),
//! [`transport`] (building the rmcp transport, and the direct client, from the configuration),
//! [`lists`] (fetching an upstream's lists), [`client`] (rmcp's client handler), [`direct`]
//! (`tools/call` without rmcp) over [`h1`], [`oauth`], [`relay`] and [`sse`] (legacy transport).

pub mod client;
pub mod direct;
pub mod h1;
pub mod lists;
pub mod oauth;
pub mod registry;
pub mod relay;
pub mod sse;
mod supervisor;
mod transport;

pub use client::{ProgressRouter, UpstreamClient};
pub use direct::DirectClient;
pub use lists::Lists;
pub use registry::{
    CONNECT_TIMEOUT, Health, Link, State, Unavailable, Upstream, UpstreamStatus, Upstreams,
};
