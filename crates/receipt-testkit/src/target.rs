//! Where cargo put this build, and building another artifact into the same place (the C
//! programs need `libreceipt_ffi.so`, the child-process tests the `receipt-server` binary;
//! `cargo test` builds neither for other crates' tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The target dir and profile dir name (`debug`, `release`, ...) this executable was built in:
/// from its path (`<target>/<profile>/deps/<test>` for a test, `<target>/<profile>/<bin>` for
/// a binary); without that layout, `$CARGO_TARGET_DIR` (or the workspace `target`), `debug`.
pub fn build_dir() -> (PathBuf, String) {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().map(|d| if d.ends_with("deps") { d.parent().unwrap_or(d) } else { d });
    let from_exe = dir.and_then(|profile_dir| {
        let profile = profile_dir.file_name()?.to_str()?.to_string();
        let target = profile_dir.parent()?;
        target.join("CACHEDIR.TAG").exists().then(|| (target.to_path_buf(), profile))
    });
    from_exe.unwrap_or_else(|| {
        let t = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
        (t, "debug".to_string())
    })
}

/// Runs `cargo build <args>` (a no-op when up to date) into [`build_dir`]'s target dir and
/// profile; returns the profile dir, where the artifacts are. Panics if the build fails.
pub fn cargo_build(args: &[&str]) -> PathBuf {
    // One build at a time from this process: tests run on threads and cargo's own lock would
    // only make the others wait with less to say.
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let (target_dir, profile) = build_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build").args(args).arg("--target-dir").arg(&target_dir).current_dir(workspace_root());
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let st = cmd.status().expect("running cargo build");
    assert!(st.success(), "cargo build {} failed", args.join(" "));
    target_dir.join(profile)
}
