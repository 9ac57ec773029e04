//! Shared by the broker benchmarks: a tansu broker of their own, peak RSS, environment knobs.

use std::path::PathBuf;
use std::process::Command;

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `/proc/self/status` field in bytes (`VmHWM`, `VmRSS`, …).
fn status_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines().find_map(|l| {
        let kb: u64 = l
            .strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    })
}

/// Peak RSS of this process (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM")
}

/// Current RSS of this process (`VmRSS`).
#[allow(dead_code)] // not every benchmark that includes this module calls it
pub fn rss() -> Option<u64> {
    status_bytes("VmRSS")
}

/// A tansu broker started by this process, stopped on drop (also when the bench panics).
pub struct Broker {
    pub addr: String,
    dir: Option<PathBuf>,
    root: PathBuf,
}

impl Broker {
    #[allow(dead_code)] // not every benchmark that includes this module calls it
    pub fn start() -> Broker {
        Broker::start_on(None)
    }

    /// [`Broker::start`] on a given storage engine (`TANSU_STORAGE` of scripts/broker.sh;
    /// `None`: its default, or the environment's).
    pub fn start_on(storage: Option<&str>) -> Broker {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        if let Ok(addr) = std::env::var("CHURN_TEST_BROKERS") {
            return Broker {
                addr,
                dir: None,
                root,
            };
        }
        let dir = std::env::temp_dir().join(format!("churn-bench-broker-{}", std::process::id()));
        let mut cmd = Command::new(root.join("scripts/broker.sh"));
        if let Some(s) = storage {
            cmd.env("TANSU_STORAGE", s);
        }
        let out = cmd
            .arg("start")
            .arg(&dir)
            .current_dir(&root)
            .output()
            .expect("running scripts/broker.sh start");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let addr = stdout.lines().last().unwrap_or_default().trim().to_string();
        assert!(
            out.status.success() && !addr.is_empty(),
            "broker.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("[bench] tansu on {addr} (dir {})", dir.display());
        Broker {
            addr,
            dir: Some(dir),
            root,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = Command::new(self.root.join("scripts/broker.sh"))
                .arg("stop")
                .arg(&dir)
                .status();
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
