//! The fresh-machine path of scripts/setup.sh (the setup step of `make run`, `make test` and
//! `.ci/run`), simulated: this machine has everything, so the test hides `prometheus` and
//! `promtool` by running the step with a PATH that has every other command of the real PATH
//! (a directory of symlinks) and checks that `--check` finds them missing and names the package
//! and the install command. `--check` installs nothing, so no apt-get runs inside `make test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `bash scripts/setup.sh --check` with PATH = `path`.
fn check(path: &std::ffi::OsStr) -> Output {
    Command::new("bash")
        .arg("scripts/setup.sh")
        .arg("--check")
        .current_dir(root())
        .env("PATH", path)
        .output()
        .expect("run scripts/setup.sh --check")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A directory with a symlink to every command on the current PATH (the first of each name, as
/// PATH lookup finds it) except `hide`.
fn path_without(hide: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    let path = std::env::var_os("PATH").expect("PATH");
    for d in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if hide.iter().any(|h| name == *h) {
                continue;
            }
            let link = dir.path().join(&name);
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(e.path(), &link).expect("symlink");
            }
        }
    }
    dir
}

#[test]
fn setup_check_reports_prometheus_missing_when_it_is_not_on_path() {
    let bin = path_without(&["prometheus", "promtool"]);
    assert!(!bin.path().join("prometheus").exists());
    assert!(bin.path().join("bash").exists(), "bash is on PATH");
    let o = check(bin.path().as_os_str());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "missing packages exit 1\n{out}");
    assert!(
        out.contains("missing Debian packages: prometheus;"),
        "names the package\n{out}"
    );
    assert!(
        out.contains("apt-get install -y prometheus\n"),
        "gives the command, with nothing else missing here\n{out}"
    );
}

#[test]
fn setup_check_reports_promtool_alone_missing_as_the_prometheus_package() {
    let bin = path_without(&["promtool"]);
    let o = check(bin.path().as_os_str());
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("apt-get install -y prometheus\n"), "{out}");
}

#[test]
fn setup_check_finds_nothing_missing_on_this_machine() {
    // `make test` ran scripts/setup.sh before this, which installs whatever is missing.
    let o = check(&std::env::var_os("PATH").expect("PATH"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("[setup] nothing missing"), "{out}");
}
