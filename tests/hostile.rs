//! Hostile input: the corpus in `tests/hostile/` (plus large items generated here) must be
//! rejected by the decoder with a precise reason and never panic, and through the real broker
//! every hostile message must land in the DLQ byte for byte with its reason and source headers,
//! while the good events around it are all consumed.
//!
//! Size limits, outermost first:
//! - librdkafka's producer `message.max.bytes` (default 1 000 000): a bigger record is refused by
//!   the *producer* before it reaches the broker (`MessageSizeTooLarge`), so the 10 MB item can
//!   never reach the pipeline; the producing application gets the error.
//! - `pipeline.max_event_bytes` (default 64 KiB): anything above it but below the broker limit
//!   (the 200 KB item here) is consumed and dead-lettered with `oversize`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use churn_events::{decode, DecodeLimits, Rejection};
use churn_metrics::{Health, Metrics};
use churn_pipeline::{kafka, Config};
use tokio_util::sync::CancellationToken;

/// One hostile message to send: topic, key, payload.
type Planned<'a> = (&'a str, Option<&'a [u8]>, &'a [u8]);

/// Every file in `tests/hostile/` and what decoding it must give (`"ok"` = accepted).
const CORPUS: &[(&str, &str)] = &[
    ("truncated.json", "malformed_json"),
    ("truncated_mid_string.json", "malformed_json"),
    ("empty.json", "malformed_json"),
    ("whitespace_only.json", "malformed_json"),
    ("json_null.json", "malformed_json"),
    ("top_level_array.json", "malformed_json"),
    ("invalid_utf8.json", "invalid_utf8"),
    ("overlong_utf8.json", "invalid_utf8"),
    ("utf16le_bom.json", "invalid_utf8"),
    ("utf8_bom.json", "malformed_json"),
    ("nan_literal.json", "malformed_json"),
    ("infinity_literal.json", "malformed_json"),
    ("neg_infinity_literal.json", "malformed_json"),
    ("amount_nan_string.json", "not_a_number"),
    ("amount_1e400.json", "malformed_json"),
    ("amount_neg_1e400.json", "malformed_json"),
    ("nps_huge.json", "nps_out_of_range"),
    ("nps_u64_overflow.json", "nps_out_of_range"),
    ("nps_negative.json", "nps_out_of_range"),
    ("nps_string.json", "not_a_number"),
    ("year_9999.json", "future_timestamp"),
    ("year_10000.json", "bad_timestamp"),
    ("feb_30.json", "bad_timestamp"),
    ("timestamp_no_zone.json", "bad_timestamp"),
    ("timestamp_epoch_number.json", "wrong_type"),
    ("empty_customer_id.json", "empty_field"),
    ("blank_customer_id.json", "empty_field"),
    ("null_customer_id.json", "missing_field"),
    ("object_customer_id.json", "wrong_type"),
    ("long_customer_id.json", "field_too_long"),
    ("binary_garbage.bin", "invalid_utf8"),
    ("control_chars.bin", "malformed_json"),
    ("nul_in_string.json", "malformed_json"),
    ("nul_before_object.json", "malformed_json"),
    ("nul_after_object.json", "malformed_json"),
    ("lone_surrogate.json", "malformed_json"),
    ("duplicate_keys.json", "malformed_json"),
    ("duplicate_type_key.json", "malformed_json"),
    ("two_objects.json", "malformed_json"),
    ("items_huge.json", "wrong_type"),
    ("unknown_type.json", "unknown_type"),
    ("trailing_comma.json", "malformed_json"),
    ("single_quotes.json", "malformed_json"),
    ("comment.json", "malformed_json"),
    // Bounded since issue 15: `pipeline.max_past_days` (10 years) and `pipeline.max_number` (1e9).
    ("year_0001.json", "ancient_timestamp"),
    ("amount_1e300.json", "out_of_range"),
    ("mrr_5e9.json", "out_of_range"),
    // Accepted today (see tests/hostile/README.md): an escaped NUL is a valid JSON string
    // character.
    ("escaped_nul_customer_id.json", "ok"),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hostile")
}

/// The decoder's clock for the unit-level checks (the corpus uses 2026-02-01 timestamps).
fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .map(|d| d.with_timezone(&Utc))
        .expect("valid literal")
}

/// A valid feedback event whose `comment` pads it to about `size` bytes.
fn padded_event(size: usize) -> Vec<u8> {
    let head = r#"{"event_id":"h-big","customer_id":"cust-h","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":5,"comment":""#;
    let mut v = Vec::with_capacity(size + 8);
    v.extend_from_slice(head.as_bytes());
    v.resize(size.saturating_sub(2).max(head.len()), b'x');
    v.extend_from_slice(b"\"}");
    v
}

/// Large hostile items built here rather than committed: (name, bytes, code at default limits).
fn generated() -> Vec<(String, Vec<u8>, &'static str)> {
    vec![
        ("payload_200kb".into(), padded_event(200_000), "oversize"),
        (
            "nested_100k_brackets".into(),
            vec![b'['; 100_000],
            "oversize",
        ),
        (
            // Deep nesting that fits the 64 KiB limit: serde_json's recursion limit must stop it.
            "nested_60k_in_object".into(),
            [br#"{"event_id":"#.as_slice(), [b'['; 60_000].as_slice()].concat(),
            "malformed_json",
        ),
    ]
}

/// Code of decoding `bytes`, with a panic turned into an error message.
fn code_of(bytes: &[u8], limits: &DecodeLimits) -> Result<&'static str, String> {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode(bytes, now(), limits)
    }));
    match r {
        Ok(Ok(_)) => Ok("ok"),
        Ok(Err(rej)) => {
            let text = rej.to_string();
            if !text.starts_with(rej.code()) || !Rejection::CODES.contains(&rej.code()) {
                return Err(format!("reason `{text}` does not start with a known code"));
            }
            Ok(rej.code())
        }
        Err(_) => Err("decode panicked".into()),
    }
}

/// (name, bytes, expected code) for every rejected corpus file plus the generated items.
fn rejected_corpus() -> Vec<(String, Vec<u8>, &'static str)> {
    let mut out: Vec<(String, Vec<u8>, &'static str)> = CORPUS
        .iter()
        .filter(|(_, code)| *code != "ok")
        .map(|(name, code)| {
            let bytes = std::fs::read(corpus_dir().join(name)).expect("corpus file");
            (name.to_string(), bytes, *code)
        })
        .collect();
    out.extend(generated());
    out
}

#[test]
fn every_corpus_file_is_listed_with_its_expected_reason() {
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("tests/hostile exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "README.md")
        .collect();
    files.sort();
    let listed: Vec<&str> = CORPUS.iter().map(|(n, _)| *n).collect();
    let unlisted: Vec<&String> = files
        .iter()
        .filter(|f| !listed.contains(&f.as_str()))
        .collect();
    let missing: Vec<&&str> = listed
        .iter()
        .filter(|n| !files.iter().any(|f| f == **n))
        .collect();
    assert!(
        unlisted.is_empty() && missing.is_empty(),
        "files without an expected reason: {unlisted:?}; listed but missing: {missing:?}"
    );
}

#[test]
fn decoder_rejects_the_corpus_with_precise_reasons_and_never_panics() {
    let limits = DecodeLimits::default();
    let mut failures = Vec::new();
    for (name, want) in CORPUS {
        let bytes = std::fs::read(corpus_dir().join(name)).expect("corpus file");
        match code_of(&bytes, &limits) {
            Ok(got) if got == *want => {}
            Ok(got) => failures.push(format!("{name}: expected {want}, got {got}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    for (name, bytes, want) in generated() {
        match code_of(&bytes, &limits) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{name}: expected {want}, got {got}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn large_and_deep_inputs_are_bounded_even_with_raised_limits() {
    let default = DecodeLimits::default();
    let ten_mb = padded_event(10 * 1024 * 1024);
    let t = Instant::now();
    assert_eq!(code_of(&ten_mb, &default), Ok("oversize"));
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "oversize check must not parse"
    );

    // With the byte limit out of the way, the other guards still hold.
    let raised = DecodeLimits {
        max_bytes: 64 * 1024 * 1024,
        ..DecodeLimits::default()
    };
    let t = Instant::now();
    assert_eq!(code_of(&ten_mb, &raised), Ok("field_too_long"));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "10 MB decode is linear"
    );
    assert_eq!(code_of(&vec![b'['; 100_000], &raised), Ok("malformed_json"));
    let deep_obj = [br#"{"comment":"#.as_slice(), [b'['; 100_000].as_slice()].concat();
    assert_eq!(code_of(&deep_obj, &raised), Ok("malformed_json"));
    let deep_map = [
        br#"{"comment":"#.as_slice(),
        br#"{"a":"#.repeat(100_000).as_slice(),
    ]
    .concat();
    assert_eq!(code_of(&deep_map, &raised), Ok("malformed_json"));
}

/// Bounded-time randomized mutation test (a stand-in for `cargo fuzz`, which is not installed):
/// mutate corpus items and valid events for a few seconds; `decode` must never panic, every
/// rejection must carry a known code, and every accepted event must round-trip through
/// `Event::to_json`. `CHURN_FUZZ_SECONDS` (default 3) and `CHURN_FUZZ_SEED` override.
#[test]
fn randomized_mutations_never_panic_and_accepted_events_round_trip() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let seconds: u64 = std::env::var("CHURN_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("CHURN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seeds: Vec<Vec<u8>> = CORPUS
        .iter()
        .map(|(name, _)| std::fs::read(corpus_dir().join(name)).expect("corpus file"))
        .collect();
    let pop = churn_gen::generate(&churn_gen::GenConfig {
        customers: 20,
        days: 30,
        seed: 3,
        ..Default::default()
    });
    seeds.extend(pop.events.iter().take(200).map(|e| e.to_json()));
    let limits = DecodeLimits::default();
    let tokens: [&[u8]; 12] = [
        b"[", b"{", b"\"", b"\\u0000", b"\\ud800", b"1e400", b"-", b"null", b",", b":", b"\xff",
        b"9999",
    ];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut accepted) = (0u64, 0u64);
    while Instant::now() < deadline {
        let mut b = seeds[rng.gen_range(0..seeds.len())].clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..=b.len());
            match rng.gen_range(0..6) {
                0 if !b.is_empty() => {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.gen();
                }
                1 => b.insert(at, rng.gen()),
                2 => b.truncate(at),
                3 => {
                    let t = tokens[rng.gen_range(0..tokens.len())];
                    let n = rng.gen_range(1..200);
                    let ins: Vec<u8> = t.repeat(n);
                    b.splice(at..at, ins);
                }
                4 => {
                    let end = rng.gen_range(at..=b.len());
                    b.drain(at..end);
                }
                _ => {
                    let other = &seeds[rng.gen_range(0..seeds.len())];
                    let from = rng.gen_range(0..=other.len());
                    b.splice(at..at, other[from..].iter().copied());
                }
            }
        }
        runs += 1;
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(&b, now(), &limits)));
        match r {
            Err(_) => panic!(
                "decode panicked (seed {seed}) on {:?}",
                String::from_utf8_lossy(&b)
            ),
            Ok(Err(rej)) => assert!(
                Rejection::CODES.contains(&rej.code()) && rej.to_string().starts_with(rej.code()),
                "bad rejection {rej} (seed {seed})"
            ),
            Ok(Ok(ev)) => {
                accepted += 1;
                let again = decode(&ev.to_json(), now(), &limits);
                assert_eq!(again.as_ref(), Ok(&ev), "round trip (seed {seed})");
            }
        }
    }
    eprintln!("randomized decode: {runs} inputs, {accepted} accepted, seed {seed}");
    assert!(runs > 1000, "only {runs} inputs in {seconds} s");
}

struct Setup {
    cfg: Config,
}

async fn setup(name: &str) -> Setup {
    let mut cfg = common::pipeline_config(name, 2).await;
    cfg.pipeline.batch_max_wait_ms = 100;
    cfg.pipeline.sweep_interval_s = 1;
    Setup { cfg }
}

/// Messages whose micro-batch finished (outputs acknowledged, offsets stored).
fn processed(m: &Metrics) -> u64 {
    m.batch_events.get_sample_sum() as u64
}

/// Run the pipeline on `cfg` until it has processed `n` messages (or 60 s passed), asserting it
/// is still running, then stop it cleanly; returns its metrics.
async fn run_until_processed(cfg: &Config, n: u64) -> Arc<Metrics> {
    let (_, model, _) = common::population_and_model(400, 150, 7, common::default_warmup());
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let pipeline = tokio::spawn(kafka::run(
        cfg.clone(),
        Arc::new(model),
        metrics.clone(),
        Health::default(),
        shutdown.child_token(),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while processed(&metrics) < n && Instant::now() < deadline && !pipeline.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !pipeline.is_finished(),
        "pipeline stopped: {:?}",
        pipeline.await
    );
    shutdown.cancel();
    pipeline
        .await
        .expect("join")
        .expect("pipeline exits cleanly");
    metrics
}

type Sent = BTreeMap<(String, Option<Vec<u8>>, Vec<u8>), (&'static str, usize)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_reach_the_dlq_intact_and_good_events_are_all_consumed() {
    let cfg = setup("hostile").await.cfg;

    let (pop, model, _) = common::population_and_model(400, 150, 7, common::default_warmup());
    let good = &pop.events[..pop.events.len().min(8000)];

    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let pipeline = tokio::spawn(kafka::run(
        cfg.clone(),
        Arc::new(model),
        metrics.clone(),
        Health::default(),
        shutdown.child_token(),
    ));

    // The corpus repeated (large items every 5th round only), spread over the input topics
    // and over three key shapes: a key, an empty key, no key.
    let corpus = rejected_corpus();
    let mut hostile: Vec<(&[u8], &'static str)> = Vec::new();
    for round in 0..60 {
        for (_, bytes, code) in &corpus {
            if bytes.len() > 64 * 1024 && round % 5 != 0 {
                continue;
            }
            hostile.push((bytes.as_slice(), *code));
        }
    }
    let inputs: Vec<String> = cfg.topics.inputs().iter().map(|t| t.to_string()).collect();
    let keys: [Option<&[u8]>; 3] = [Some(b"hostile-key"), Some(b""), None];
    let mut sent: Sent = BTreeMap::new();
    let plan: Vec<Planned> = hostile
        .iter()
        .enumerate()
        .map(|(j, (bytes, code))| {
            let topic = inputs[j % inputs.len()].as_str();
            let key = keys[j % keys.len()];
            let e = sent
                .entry((topic.to_string(), key.map(<[u8]>::to_vec), bytes.to_vec()))
                .or_insert((*code, 0));
            e.1 += 1;
            (topic, key, *bytes)
        })
        .collect();
    // Three good events, one hostile message, and so on until both run out.
    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    let (mut good_iter, mut bad_iter) = (good.iter(), plan.iter());
    loop {
        let mut progressed = false;
        for ev in good_iter.by_ref().take(3) {
            publisher.send_event(ev).await.expect("send good");
            progressed = true;
        }
        if let Some((topic, key, bytes)) = bad_iter.next() {
            publisher
                .send_raw(topic, *key, bytes)
                .await
                .expect("send hostile");
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    let total = publisher.flush().await.expect("flush") as u64;
    let n_bad = hostile.len() as u64;
    assert_eq!(total, good.len() as u64 + n_bad);

    let deadline = Instant::now() + Duration::from_secs(240);
    while processed(&metrics) < total && Instant::now() < deadline && !pipeline.is_finished() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shutdown.cancel();
    pipeline
        .await
        .expect("join")
        .expect("pipeline exits cleanly");

    let consumed: u64 = inputs.iter().map(|t| metrics.consumed(t).get()).sum();
    assert_eq!(consumed, total, "every message was consumed");
    assert_eq!(processed(&metrics), total, "every batch finished");
    assert_eq!(metrics.duplicates_dropped.get(), 0);
    assert_eq!(metrics.dlq_published.get(), n_bad, "DLQ deliveries");
    let rejected: u64 = Rejection::CODES
        .iter()
        .map(|c| metrics.events_rejected.with_label_values(&[c]).get())
        .sum();
    assert_eq!(rejected, n_bad, "rejections counted");

    let dlq = common::read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.dlq,
        hostile.len() + 1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        dlq.len(),
        hostile.len(),
        "each hostile message dead-lettered once"
    );
    let mut seen_offsets = std::collections::BTreeSet::new();
    for r in &dlq {
        let topic = r.header("source.topic").expect("source.topic").to_string();
        let partition: i32 = r
            .header("source.partition")
            .and_then(|p| p.parse().ok())
            .expect("numeric source.partition");
        let offset: i64 = r
            .header("source.offset")
            .and_then(|p| p.parse().ok())
            .expect("numeric source.offset");
        assert!(
            seen_offsets.insert((topic.clone(), partition, offset)),
            "source position dead-lettered twice: {topic}/{partition}@{offset}"
        );
        assert_eq!(r.header("error.stage"), Some("ingest"));
        let reason = r.header("error.reason").expect("error.reason");
        let k = (topic, r.key.clone(), r.payload.clone());
        let Some((code, left)) = sent.get_mut(&k) else {
            panic!(
                "DLQ record not sent as hostile (key {:?}, {} bytes, reason {reason}); \
                 key or payload changed?",
                r.key,
                r.payload.len()
            );
        };
        assert!(
            reason.starts_with(*code),
            "reason `{reason}` for a `{code}` item"
        );
        assert!(*left > 0, "more DLQ copies than sent");
        *left -= 1;
    }
    let missing: Vec<_> = sent.iter().filter(|(_, (_, n))| *n > 0).collect();
    assert!(missing.is_empty(), "{} sent items missing", missing.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_beyond_the_producer_limit_is_refused_before_the_broker() {
    let cfg = setup("oversize").await.cfg;
    let mut publisher = kafka::Publisher::new(&cfg).expect("publisher");
    let ten_mb = padded_event(10 * 1024 * 1024);
    let err = publisher
        .send_raw(&cfg.topics.purchases, Some(b"big"), &ten_mb)
        .await
        .expect_err("librdkafka refuses records above message.max.bytes");
    let text = err.to_string();
    assert!(text.contains("MessageSizeTooLarge"), "error: {text}");
    // The producer stays usable after the refusal.
    publisher
        .send_raw(&cfg.topics.purchases, Some(b"big"), &padded_event(200_000))
        .await
        .expect("a 200 KB record is below the limit");
    assert_eq!(publisher.flush().await.expect("flush"), 1);
}

/// A record the broker accepted but that is bigger than the pipeline producer's
/// `message.max.bytes` (tansu enforces no size limit; on Kafka this happens when a topic's
/// `max.message.bytes` is raised above the client default). It cannot be dead-lettered whole, and
/// failing would make it a poison pill (no offset stored, read again after every restart): its
/// head goes to the DLQ with `error.truncated_from_bytes`, and the pipeline goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_above_the_dlq_producer_limit_does_not_stop_the_pipeline() {
    let cfg = setup("poison").await.cfg;
    let mut raised = cfg.clone();
    raised
        .kafka
        .producer
        .insert("message.max.bytes".into(), "20000000".into());
    let mut big = kafka::Publisher::new(&raised).expect("publisher");
    big.send_raw(
        &cfg.topics.purchases,
        Some(b"big"),
        &padded_event(10 * 1024 * 1024),
    )
    .await
    .expect("the broker takes 10 MB when the client allows it");
    big.send_raw(&cfg.topics.purchases, Some(b"small"), b"{")
        .await
        .expect("send");
    assert_eq!(big.flush().await.expect("flush"), 2);

    let metrics = run_until_processed(&cfg, 2).await;
    assert_eq!(processed(&metrics), 2, "both offsets processed");
    assert_eq!(metrics.dlq_published.get(), 2, "both dead-lettered");
    let dlq = common::read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.dlq,
        2,
        Duration::from_secs(10),
    )
    .await;
    let big = dlq
        .iter()
        .find(|r| r.key.as_deref() == Some(b"big".as_slice()))
        .expect("the big record is in the DLQ");
    assert_eq!(
        big.header("error.truncated_from_bytes"),
        Some((10 * 1024 * 1024).to_string().as_str())
    );
    assert!(big.payload.len() < 1_000_000);
    assert!(big
        .header("error.reason")
        .is_some_and(|r| r.starts_with("oversize")));
}

/// Issue #15, item 4: the DLQ path kept a rejected record's key and headers whole. A 900 kB key
/// or 600 kB of headers (the broker took them: tansu has no limit) made the dead letter too big
/// for the producer (`MsgSizeTooLarge`), the pipeline stopped without storing the offset, and
/// every restart met the same record. Now each part is cut to fit and the cut is said in a
/// header (`crate::dlq`), and the pipeline goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_key_or_huge_headers_do_not_stop_the_pipeline() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let cfg = setup("poison-key").await.cfg;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("message.max.bytes", "20000000")
        .create()
        .expect("producer");
    let key = vec![b'k'; 900_000];
    let value = vec![b'h'; 60_000];
    let mut headers = OwnedHeaders::new();
    for _ in 0..10 {
        headers = headers.insert(Header {
            key: "big",
            value: Some(&value[..]),
        });
    }
    for (key, headers) in [
        (&key[..], None),
        (&b"heads"[..], Some(headers.clone())),
        (&key[..], Some(headers)),
    ] {
        let mut r = FutureRecord::<[u8], [u8]>::to(&cfg.topics.purchases)
            .key(key)
            .payload(b"{");
        if let Some(h) = headers {
            r = r.headers(h);
        }
        producer
            .send(r, Duration::from_secs(20))
            .await
            .map_err(|(e, _)| e)
            .expect("the broker takes it when the client allows it");
    }

    let metrics = run_until_processed(&cfg, 3).await;
    assert_eq!(processed(&metrics), 3, "every offset processed");
    assert_eq!(metrics.dlq_published.get(), 3, "all dead-lettered");
    let dlq = common::read_topic(
        &cfg.kafka.brokers,
        &cfg.topics.dlq,
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(dlq.len(), 3);
    let with_long_key = dlq
        .iter()
        .filter(|r| r.header("error.truncated_key_from_bytes") == Some("900000"))
        .count();
    assert_eq!(with_long_key, 2, "both long keys cut and said so");
    let with_heads = dlq
        .iter()
        .filter(|r| r.header("error.dropped_headers").is_some())
        .count();
    assert_eq!(with_heads, 2, "both header sets cut and said so");
    for r in &dlq {
        assert!(r.key.as_ref().is_some_and(|k| k.len() <= 1024));
        assert!(r.header("error.reason").is_some());
        assert_eq!(r.payload, b"{", "the payload itself fits and is kept");
    }
}
