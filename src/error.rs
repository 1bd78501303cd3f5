//! Two error classes, kept apart as in DataFusion: a *user* error (bad config,
//! bad path, bad data row), built by [`config_error!`] or [`data_error!`]
//! with a message that says what to fix; anything else is a bug or an
//! environment failure (a full disk, a file that cannot be read). They
//! differ in their exit code ([`exit_code`]) and in what they carry, not in
//! how they print: [`render`] writes either as one line.

use std::process::ExitCode;

/// A mistake the user can fix. `Config` is a usage/config error (exit 2);
/// `Data` is bad input data found while a stage ran (the stage fails, exit 1).
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Data(String),
}

/// `config_error!("key {k}: ...")` builds an `anyhow::Error` holding [`UserError::Config`].
#[macro_export]
macro_rules! config_error {
    ($($arg:tt)*) => { ::anyhow::Error::new($crate::error::UserError::Config(format!($($arg)*))) };
}

/// `data_error!("{file}: line {n}: ...")` builds an `anyhow::Error` holding [`UserError::Data`].
#[macro_export]
macro_rules! data_error {
    ($($arg:tt)*) => { ::anyhow::Error::new($crate::error::UserError::Data(format!($($arg)*))) };
}

/// Documented exit codes: 0 ok, 1 a stage failed, 2 usage/config error.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<UserError>() {
        Some(UserError::Config(_)) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

/// How an error is printed: one line, `augment: ` and the context chain
/// joined by `: `, outermost first. A user error is the root of its chain
/// and its message stands alone, so the line is the stage it happened in (if
/// any) and the message; any other error keeps every context it gathered.
pub fn render(err: &anyhow::Error) -> String {
    format!("augment: {err:#}")
}
