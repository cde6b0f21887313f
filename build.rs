//! Code versions of the cells: for each kind of cell, a hash of every source file its make
//! can reach, derived by walking the imports (see `build/code_version.rs`), exported as
//! `GOODHART_CODE_<KIND>`. A cell's store key includes its kind's hash, so a model made by
//! older code is never reused after that code changes (see `src/cell/mod.rs`).

#[path = "build/code_version.rs"]
mod code_version;

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    // What the build adds that can change the bytes: the target and the vector extensions
    // compiled in (the kernels dispatch on them).
    let extra = format!("{} {}", env("TARGET"), env("CARGO_CFG_TARGET_FEATURE"));
    // The package being built, read when the script runs: `env!` would bake in the folder
    // the script was compiled in, and a target folder copied from another checkout would
    // then hash that checkout's sources.
    let manifest_dir = env("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir);
    for (kind, (version, _)) in code_version::versions(root, &extra) {
        println!("cargo:rustc-env=GOODHART_CODE_{kind}={version}");
    }
}
