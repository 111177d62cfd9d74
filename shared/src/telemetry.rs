//! Logging setup shared by both binaries: text or JSON lines, filter from config, `RUST_LOG`
//! overriding it. Call [`init`] once, from `main`; tests never call it (they would fight over
//! the global subscriber), so library code only ever uses the `tracing` macros.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber.
///
/// # Errors
///
/// When the filter directive is invalid or a subscriber is already installed.
pub fn init(config: &TelemetryConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive),
        _ => EnvFilter::try_new(&config.log_filter),
    }
    .map_err(|e| format!("invalid log filter: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Json => registry.with(tracing_subscriber::fmt::layer().json().with_current_span(false)).try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    result.map_err(|e| format!("cannot install log subscriber: {e}"))
}
