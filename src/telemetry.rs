//! Structured logging with tracing, to stderr (stdout is for command output,
//! e.g. `score`). `RUST_LOG` overrides the configured level.
//! Logs never carry tokens, and patient identifiers only in the audit tables.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

pub fn init(json: bool, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let registry = tracing_subscriber::registry().with(filter);
    // `try_init`: tests and embedders may have installed a subscriber already.
    let _ = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_target(false),
            )
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init()
    };
}
