//! Portcullis portal.

pub mod audit;
pub mod dlp;
