//! The library's one error type. Every variant carries the offending value (path, key,
//! model, step) so that its `Display` is a one-line message a user can act on.

use std::path::PathBuf;

/// Errors raised by the goodhart library. `main.rs` prints them on one line and exits with
/// [`Error::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    /// A file is not valid TOML (JSON) or does not match the schema. For an experiment file
    /// `msg` starts with the dotted path of the offending key (`proxy.sizes[1].width: …`).
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
    /// The experiment needs more memory or disk than this machine has (see
    /// [`crate::plan::resources::check_resources`]).
    #[error("needs about {needed} of {what} ({detail}), more than the {available} {source_of_limit}")]
    Resources {
        what: &'static str,
        needed: String,
        available: String,
        source_of_limit: String,
        detail: String,
    },
    /// A part of the run's memory or disk estimate does not fit in 64 bits.
    #[error("{keys}: the run's {what} would need more than 2^64 bytes of {resource}")]
    Overflow {
        keys: &'static str,
        what: &'static str,
        resource: &'static str,
    },
    /// The plan is larger than its limit (see [`crate::plan::check`]).
    #[error("the plan {what}, more than the limit of {limit}; {detail}")]
    PlanTooLarge { what: String, limit: String, detail: String },
    /// The requested device cannot be used by this build or machine.
    #[error("device {name}: {reason}")]
    Device { name: String, reason: String },
    /// `--jobs` asks for more threads than goodhart allows, or the pool cannot be built.
    #[error("--jobs {jobs}: {reason}")]
    Jobs { jobs: usize, reason: String },
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
    /// Exit status of the command line for this error: 2 for bad input (an experiment file
    /// that does not parse or validate, one too large for this machine, a bad `--device` or
    /// `--jobs`, a damaged results table given to `report`), 1 for everything else (I/O,
    /// training, stored cells, Slurm).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Parse { .. }
            | Error::Invalid { .. }
            | Error::Resources { .. }
            | Error::PlanTooLarge { .. }
            | Error::Overflow { .. }
            | Error::Device { .. }
            | Error::Jobs { .. }
            | Error::BadTable { .. } => 2,
            Error::Io { .. }
            | Error::NonFiniteLoss { .. }
            | Error::Artifact { .. }
            | Error::ResultsConflict { .. }
            | Error::Table { .. }
            | Error::Figure { .. }
            | Error::Slurm { .. }
            | Error::Tensor(_) => 1,
        }
    }

    /// Shorthand for an I/O error at `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}
