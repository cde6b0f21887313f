//! The library's one error type. Every variant carries the offending value (path, key,
//! model, step) so that its `Display` is a one-line message a user can act on.

use std::path::PathBuf;

/// Errors raised by the goodhart library. `main.rs` prints them on one line and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// The experiment file is not valid TOML or does not match the schema.
    #[error("{path}:{line}:{col}: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        col: usize,
        msg: String,
    },
    /// A key holds a value the experiment cannot run with.
    #[error("{path}: {key}: {msg}")]
    Invalid {
        path: PathBuf,
        key: String,
        msg: String,
    },
    /// A training loss became NaN or infinite.
    #[error("{model}: non-finite loss ({value}) at step {step}")]
    NonFiniteLoss {
        model: String,
        step: usize,
        value: f32,
    },
    /// A stored model is missing a file, fails its checksum, or does not match its config.
    #[error("artifact {dir}: {reason}")]
    Artifact { dir: PathBuf, reason: String },
    /// The requested device cannot be used by this build or machine.
    #[error("device {name}: {reason}")]
    Device { name: String, reason: String },
    /// The results folder already holds a run of a different configuration.
    #[error("{dir}: holds results of a different config (hash {found}, this run {expected}); pass --out DIR or --force")]
    ResultsConflict {
        dir: PathBuf,
        found: String,
        expected: String,
    },
    /// A table could not be built or written.
    #[error("table {path}: {msg}")]
    Table { path: PathBuf, msg: String },
    /// A figure could not be drawn or written.
    #[error("figure {path}: {msg}")]
    Figure { path: PathBuf, msg: String },
    /// Slurm could not be asked to run the plan.
    #[error("slurm: {msg}")]
    Slurm { msg: String },
    /// A tensor operation failed (shape mismatch, device error).
    #[error("tensor op: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A table read back (or the manifest's record of it) is damaged, or changed since the run
    /// wrote it: `msg` names the column and row where there is one.
    #[error("{path}: {msg}")]
    BadTable { path: PathBuf, msg: String },
}

/// Result alias used throughout the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for an I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}
