//! Topic templates and filters (placeholder).
