//! Audit log.
