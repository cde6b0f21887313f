//! The derived code version (`build/code_version.rs`, run by `build.rs`): every kind of cell
//! is found, its walk reaches the kernels and stays in its layers, and on a copy of the tree a changed kernel constant changes every kind's version while a
//! changed report, conclusion or comment changes none.

#[path = "../build/code_version.rs"]
#[allow(dead_code)]
mod code_version;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A copy of the files the versions read (`src/`, `Cargo.lock`) under a fresh folder.
fn copy_tree(to: &Path) {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }
    copy_dir(&root().join("src"), &to.join("src"));
    std::fs::copy(root().join("Cargo.lock"), to.join("Cargo.lock")).unwrap();
}

/// Replaces the first `from` in `file` (under `tree`) by `to`; fails if there is none.
fn edit(tree: &Path, file: &str, from: &str, to: &str) {
    let path = tree.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} holds no {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

fn versions(tree: &Path) -> Vec<(String, String)> {
    code_version::versions(tree, "").into_iter().map(|(k, (v, _))| (k, v)).collect()
}

#[test]
fn every_kind_is_found_and_reaches_the_kernels_and_no_report() {
    let versions = code_version::versions(&root(), "");
    let kinds: Vec<&str> = versions.keys().map(String::as_str).collect();
    assert_eq!(kinds, ["BON", "DAA", "GOLD", "GROUP", "MULTIHEAD", "PAIRS", "POLICY", "PPO", "PROXY", "TRUNK"]);
    for (kind, (_, files)) in &versions {
        assert!(files.contains("src/model/ops.rs"), "{kind} reaches {files:?}");
        assert!(files.iter().all(|f| !f.starts_with("src/output/") && !f.ends_with("conclusions.rs")), "{kind}: {files:?}");
    }
    // A method's make stays in its folder and the layers below: no other method, no plan
    // (the group-relative methods run PPO's rollout and evaluation, by design).
    for (kind, folder, others) in [
        ("BON", "src/methods/bon/", &["src/methods/ppo/", "src/methods/group/", "src/methods/daa/"][..]),
        ("PPO", "src/methods/ppo/", &["src/methods/bon/", "src/methods/group/", "src/methods/daa/"][..]),
        ("GROUP", "src/methods/group/", &["src/methods/bon/", "src/methods/daa/"][..]),
        ("DAA", "src/methods/daa/", &["src/methods/bon/", "src/methods/group/"][..]),
    ] {
        let files = &versions[kind].1;
        assert!(files.iter().any(|f| f.starts_with(folder)), "{kind}: {files:?}");
        assert!(files.iter().all(|f| !others.iter().any(|o| f.starts_with(o)) && !f.starts_with("src/plan/")), "{kind}: {files:?}");
    }
    for kind in ["POLICY", "GOLD", "PAIRS", "PROXY"] {
        let files = &versions[kind].1;
        assert!(files.iter().all(|f| !f.starts_with("src/methods/") && !f.starts_with("src/plan/")), "{kind}: {files:?}");
    }
}

#[test]
fn every_inert_file_exists() {
    for (file, why) in code_version::INERT {
        assert!(root().join(file).is_file(), "INERT names {file} ({why}), which is not a file");
    }
}

#[test]
fn a_kernel_edit_changes_every_version_and_a_report_edit_none() {
    let tree = std::env::temp_dir().join(format!("goodhart-code-version-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tree);
    copy_tree(&tree);
    let before = versions(&tree);
    assert_eq!(before.len(), 10);

    // The report, the conclusions and a comment in a kernel: no kind's version moves.
    edit(&tree, "src/output/report/markdown.rs", "\n", "\nconst _EDITED: u8 = 1;\n");
    edit(&tree, "src/stats/conclusions.rs", "\n", "\nconst _EDITED: u8 = 1;\n");
    edit(&tree, "src/model/ops.rs", "\n", "\n// an edited comment\n");
    assert_eq!(versions(&tree), before, "a report, conclusions or comment edit moved a version");

    // The arithmetic of the fused kernels (layer norm's variance floor): every kind trains or
    // scores through them.
    edit(&tree, "src/model/ops.rs", "(var + eps).sqrt()", "(var + eps * 1.0).sqrt()");
    let after = versions(&tree);
    for ((kind, a), (_, b)) in before.iter().zip(&after) {
        assert_ne!(a, b, "{kind}'s version did not change with the kernels");
    }

    // A dependency bump (Cargo.lock) changes them all too.
    edit(&tree, "Cargo.lock", "\n", "\n# edited\n");
    let bumped = versions(&tree);
    for ((kind, a), (_, b)) in after.iter().zip(&bumped) {
        assert_ne!(a, b, "{kind}'s version did not change with Cargo.lock");
    }
    std::fs::remove_dir_all(&tree).unwrap();
}
