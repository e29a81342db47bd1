//! Control socket (being built).
