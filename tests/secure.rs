//! A secured cluster (issue #15, item 1): TLS and SASL/SCRAM against the real broker, the whole
//! pipeline through it — `churnstream run` (the real binary) consumes in a group, commits, and
//! publishes scores; the secret never shows in logs or in the config's `Debug`; a wrong password
//! stops the service with an error that names the mechanism, the user and the broker.
//!
//! SCRAM is tansu's own (`--authentication`; users made with `tansu user create` while the broker
//! still runs without it, on sqlite storage that keeps them across the restart). TLS terminates in
//! socat in front of tansu, because tansu 0.6.0 cannot enable its own TLS listener: its `--cert`
//! and `--key` are in one clap argument group, so each excludes the other ("the argument
//! '--cert <CERT>' cannot be used with '--key <KEY>'"), and the listener needs both. The broker
//! advertises the TLS port, so every connection a client makes goes through TLS.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

const PARTS: i32 = 2;
const USER: &str = "churn-svc";
const PASSWORD: &str = "pw-7f3a9c1e-never-logged";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_listening(port: u16, what: &str, log: &Path) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tansu(dir: &Path, port: u16, advertised: u16, auth: bool) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("broker.log"))
        .expect("broker log");
    let mut cmd = Command::new(common::tansu_bin());
    cmd.current_dir(dir)
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{advertised}"))
        .args(["--storage-engine", "sqlite://tansu.db"]);
    if auth {
        cmd.arg("--authentication");
    }
    let child = cmd
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn tansu (set CHURN_TANSU)");
    let p = Proc(child);
    wait_listening(port, "tansu", &dir.join("broker.log"));
    p
}

/// A self-signed certificate for 127.0.0.1 and localhost; returns the PEM path (also the CA).
fn certificate(dir: &Path) -> std::path::PathBuf {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(status.success(), "openssl req failed");
    dir.join("cert.pem")
}

/// TLS on `tls`, forwarded in plain TCP to tansu on `plain`.
fn tls_terminator(dir: &Path, tls: u16, plain: u16) -> Proc {
    let log = std::fs::File::create(dir.join("socat.log")).expect("socat log");
    let child = Command::new("socat")
        .current_dir(dir)
        .arg(format!(
            "OPENSSL-LISTEN:{tls},bind=127.0.0.1,reuseaddr,fork,cert=cert.pem,key=key.pem,verify=0"
        ))
        .arg(format!("TCP:127.0.0.1:{plain}"))
        .stdout(Stdio::null())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("socat (scripts/setup.sh installs it)");
    let p = Proc(child);
    wait_listening(tls, "socat", &dir.join("socat.log"));
    p
}

fn secured(cfg: &mut churn_pipeline::Config, tls: u16, ca: &Path, password: &str) {
    cfg.kafka.brokers = format!("127.0.0.1:{tls}");
    let c = &mut cfg.kafka.client;
    c.insert("security.protocol".into(), "SASL_SSL".into());
    c.insert("sasl.mechanism".into(), "SCRAM-SHA-512".into());
    c.insert("sasl.username".into(), USER.into());
    c.insert("sasl.password".into(), password.into());
    c.insert("ssl.ca.location".into(), ca.display().to_string());
}

/// A client with the secured settings of `cfg`.
fn client(cfg: &churn_pipeline::Config, group: &str) -> BaseConsumer {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &cfg.kafka.client {
        c.set(k, v);
    }
    c.create().expect("secured client")
}

/// Records of `topic` (every partition), read through the secured listener until `want` or a
/// quiet timeout.
fn count_records(cfg: &churn_pipeline::Config, topic: &str) -> usize {
    let c = client(cfg, &common::unique("secure_reader"));
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTS {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut n = 0;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(5) {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                assert!(m.payload().is_some());
                n += 1;
                quiet_since = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic} through TLS + SCRAM: {e}"),
            None => {}
        }
    }
    n
}

/// Σ committed offsets of `group` over the input topics, read through the secured listener.
fn committed(cfg: &churn_pipeline::Config, group: &str) -> i64 {
    let c = client(cfg, group);
    let mut tpl = TopicPartitionList::new();
    for t in cfg.topics.inputs() {
        for p in 0..PARTS {
            tpl.add_partition(t, p);
        }
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets through TLS + SCRAM");
    got.elements()
        .iter()
        .filter_map(|e| e.offset().to_raw())
        .filter(|o| *o >= 0)
        .sum()
}

fn spawn_run(config: &Path, log: &Path) -> Proc {
    Proc(common::spawn_run(config, log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_through_tls_and_scram() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = certificate(dir.path());
    let (plain, tls) = (free_port(), free_port());

    // Users and topics first, on the open broker (its storage keeps both across the restart).
    let mut broker = tansu(dir.path(), plain, plain, false);
    let made = Command::new(common::tansu_bin())
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{plain}"))
        .args(["--mechanism", "scram512", USER, PASSWORD])
        .output()
        .expect("tansu user create");
    assert!(
        made.status.success(),
        "tansu user create: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut cfg = common::pipeline_config_on(&format!("127.0.0.1:{plain}"), "secure", PARTS).await;
    common::quick_member(&mut cfg);
    let (pop, model, _) = common::population_and_model(80, 100, 3, 28);
    let model_path = dir.path().join("model.json");
    model.save(&model_path).expect("save model");
    cfg.model.path = model_path;
    drop(broker);
    broker = tansu(dir.path(), plain, tls, true);
    let _tls = tls_terminator(dir.path(), tls, plain);
    secured(&mut cfg, tls, &ca, PASSWORD);

    // The secret never shows in the configuration's Debug output.
    let debug = format!("{cfg:?} {:?}", cfg.kafka);
    assert!(!debug.contains(PASSWORD), "sasl.password in Debug output");

    // Produce through TLS + SCRAM with the pipeline's own producer.
    common::publish(&cfg, &pop.events).await;

    // The service consumes in a group, commits, and publishes scores, all through TLS + SCRAM.
    let config = dir.path().join("secure.toml");
    std::fs::write(&config, toml::to_string(&cfg).expect("toml")).expect("config");
    let log = dir.path().join("run.log");
    let run = spawn_run(&config, &log);
    let total = pop.events.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = tokio::task::block_in_place(|| committed(&cfg, &cfg.kafka.group_id));
        if done >= total {
            assert_eq!(done, total, "committed offsets cover every event exactly");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "committed {done} of {total} through TLS + SCRAM; log tail:\n{}",
            common::log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(run);
    let scores = tokio::task::block_in_place(|| count_records(&cfg, &cfg.topics.scores));
    assert!(scores > 0, "no scores published through TLS + SCRAM");
    let text = std::fs::read_to_string(&log).expect("run log");
    assert!(!text.contains(PASSWORD), "the password appears in the log");

    // A wrong password: the service stops with an error naming mechanism, user and broker.
    let mut bad = cfg.clone();
    secured(&mut bad, tls, &ca, "not-the-password");
    bad.kafka.group_id = format!("{}_bad", cfg.kafka.group_id);
    let bad_config = dir.path().join("bad.toml");
    std::fs::write(&bad_config, toml::to_string(&bad).expect("toml")).expect("config");
    let bad_log = dir.path().join("bad.log");
    let mut child = common::spawn_run(&bad_config, &bad_log);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "a wrong password did not stop the service within 60 s; log tail:\n{}",
                common::log_tail(&bad_log)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!status.success(), "a wrong password must exit non-zero");
    let text = std::fs::read_to_string(&bad_log).expect("log");
    let want: BTreeMap<&str, String> = [
        ("mechanism", "SCRAM-SHA-512".to_string()),
        ("user", USER.to_string()),
        ("broker", format!("127.0.0.1:{tls}")),
    ]
    .into();
    for (what, s) in &want {
        assert!(
            text.contains(s.as_str()),
            "the error does not name the {what} ({s}); log tail:\n{}",
            common::log_tail(&bad_log)
        );
    }
    assert!(
        !text.contains("not-the-password"),
        "the password appears in the log"
    );
    drop(broker);
}
