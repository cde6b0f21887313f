//! Progress bars with ETA for long stages (drawn only when stderr is a terminal, and not
//! under `--quiet`).

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Hides every bar made from now on (`goodhart run --quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// A bar of `len` units labelled `label` (hidden, but still counting, under `--quiet`).
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let pb = if QUIET.load(Ordering::Relaxed) { ProgressBar::hidden() } else { ProgressBar::new(len) };
    pb.set_length(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:32}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}
