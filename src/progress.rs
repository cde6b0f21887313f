//! Progress bars with ETA for long stages (drawn only when stderr is a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` units labelled `label`.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:<28} [{bar:32}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    pb
}
