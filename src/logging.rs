//! Logging: tracing to stderr (the console on the appliance) and, when a log
//! directory is configured, to `walden.log` in it.
