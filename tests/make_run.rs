//! `make run` on a fresh run directory (scripts/run.sh, what the README's first command runs):
//! it builds, starts its own broker, generates events, trains a model, runs the pipeline and the
//! replay, prints the metrics URL and alerts; the URL answers with the consumed count; SIGTERM
//! (as Ctrl-C) stops every process it started, including the broker.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET /metrics without panicking (None until the server answers 200).
fn get_metrics(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn group_alive(pgid: i32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn make_run_shows_alerts_and_metrics_and_stops_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let mut child = Command::new("bash")
        .arg("scripts/run.sh")
        .current_dir(&root)
        .env("RUN_DIR", dir.path())
        .env("CUSTOMERS", "300")
        .env("DAYS", "120")
        .env("RATE", "50000")
        .env("METRICS", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn scripts/run.sh");
    let status_of = |c: &mut std::process::Child| c.try_wait().ok().flatten();
    let pgid = child.id() as i32;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut url, mut alert) = (None, None);
    while (url.is_none() || alert.is_none()) && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l.contains("metrics  : http://") => url = Some(l),
            Ok(l) if l.starts_with("ALERT ") => alert = Some(l),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // The URL answers with a positive consumed count (retried: the replay may still be starting).
    let mut metrics_ok = false;
    while url.is_some() && !metrics_ok && Instant::now() < deadline {
        if let Some(body) = get_metrics(port) {
            let consumed: f64 = body
                .lines()
                .filter(|l| l.starts_with("churn_ingest_events_consumed_total{"))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum();
            metrics_ok = consumed > 0.0;
        }
        if !metrics_ok {
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    // Ctrl-C equivalent: the script stops the pipeline, the replay, the tail and the broker.
    let _ = Command::new("kill")
        .args(["-TERM", &pgid.to_string()])
        .status();
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let mut exited = false;
    while Instant::now() < stop_deadline {
        if status_of(&mut child).is_some() {
            exited = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let leftovers = {
        std::thread::sleep(Duration::from_secs(1));
        group_alive(pgid)
    };
    if leftovers || !exited {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
    }
    let _ = child.wait();
    assert!(url.is_some(), "make run printed the metrics URL");
    assert!(alert.is_some(), "make run printed an alert");
    assert!(metrics_ok, "the metrics URL serves the consumed count");
    assert!(exited, "SIGTERM stops make run within 60 s");
    assert!(!leftovers, "no process of make run survives it");
}
