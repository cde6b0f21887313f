//! Progress bars with ETA for long stages (drawn only when stderr is a terminal, and not
//! under `--quiet`): one overall bar for the whole run, whose ETA comes from the plan's
//! cost model (it advances by each finished cell's modelled CPU-seconds), above the bar of
//! the group of cells being made.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);
static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Hides every bar made from now on (`goodhart run --quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// The one place bars are drawn, so the overall bar and a stage's bar share the terminal.
fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| {
        if QUIET.load(Ordering::Relaxed) {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        } else {
            MultiProgress::new()
        }
    })
}

/// A bar of `len` units labelled `label` (hidden, but still counting, under `--quiet`).
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let pb = multi().add(ProgressBar::new(len));
    pb.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:32}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}

/// The run's overall bar: `millis` of modelled CPU time in all, advanced as cells finish.
pub fn overall(millis: u64, label: &str) -> ProgressBar {
    let pb = multi().insert(0, ProgressBar::new(millis));
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:32}] {percent}% (elapsed {elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}
