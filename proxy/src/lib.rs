//! Portcullis portal.
