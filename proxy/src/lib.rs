//! Portcullis portal.
pub mod codemode;
