//! The bottom layer: plain values every other module may name, with no behaviour that reaches
//! another module of the crate. Nothing here imports `crate::` beyond `model` itself.
//!
//! The layers above, bottom to top (the `layering` test keeps them so): `model` <-
//! `config` <- `identity` <- `upstream` <- `catalog` <- `policy` <- `auth` <- `portal` <- `http`
//! <- the binary.

pub mod context;
pub mod identity;

pub use context::{CertificateFacts, RequestContext};
pub use identity::{Identity, IdentityConfig, IdentityKind, SignedIdentity};
