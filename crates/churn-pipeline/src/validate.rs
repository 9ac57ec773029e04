//! Offline validation of an event file with the ingest's own decoder.
//!
//! Each non-blank line goes through [`churn_events::decode`] with the limits of the pipeline
//! configuration, so a line is rejected here exactly when `churnstream run` would send it to
//! `churn.dlq`, with the same reason code (the `error.reason` header / metric label). Duplicate
//! `event_id`s are counted too: the service drops them silently. (`train`, `evaluate` and
//! `backtest` read files with plain serde and stop at the first line that is not an event, but
//! they do not apply the value checks: negative amounts, NPS outside 0–10, future timestamps.)

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;

use chrono::{DateTime, Utc};
use churn_events::{decode, DecodeLimits, Rejection};
use serde::Serialize;

use crate::config::PipelineConfig;
use crate::Error;

/// How many rejected lines [`ValidationReport::examples`] keeps.
pub const MAX_EXAMPLES: usize = 20;

/// One rejected line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedLine {
    /// 1-based line number.
    pub line: usize,
    /// Rejection code (`malformed_json`, `negative_amount`, …).
    pub reason: &'static str,
    /// The full message (`error.reason` header value).
    pub detail: String,
}

/// Summary of a validated file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ValidationReport {
    /// Non-blank lines read.
    pub lines: usize,
    /// Lines the ingest accepts.
    pub valid: usize,
    /// Lines it would dead-letter.
    pub rejected: usize,
    /// Rejections per reason code.
    pub by_reason: BTreeMap<&'static str, usize>,
    /// Valid lines whose `event_id` was already seen (dropped by the service's dedupe).
    pub duplicate_event_ids: usize,
    /// Earliest and latest `occurred_at` among valid lines.
    pub first_event: Option<DateTime<Utc>>,
    pub last_event: Option<DateTime<Utc>>,
    /// Distinct customers among valid lines.
    pub customers: usize,
    /// The first [`MAX_EXAMPLES`] rejected lines.
    pub examples: Vec<RejectedLine>,
}

/// The decoder limits the service applies under `pipeline` (same mapping as the engine).
pub fn limits(pipeline: &PipelineConfig) -> DecodeLimits {
    crate::engine::decode_limits(pipeline)
}

/// One line of a rejects file: `{"line", "reason", "detail", "raw"}` (`raw` is the line as
/// text, invalid UTF-8 replaced by U+FFFD).
pub fn reject_record(line: usize, rejection: &Rejection, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "line": line,
        "reason": rejection.code(),
        "detail": rejection.to_string(),
        "raw": String::from_utf8_lossy(bytes),
    })
}

/// Validate every line of `r` (one JSON event per line; blank lines are skipped) as the ingest
/// would at time `now`. `on_reject(line, rejection, bytes)` sees every rejected line (e.g. to
/// write a rejects file).
pub fn validate_lines(
    mut r: impl BufRead,
    limits: &DecodeLimits,
    now: DateTime<Utc>,
    mut on_reject: impl FnMut(usize, &Rejection, &[u8]) -> std::io::Result<()>,
) -> Result<ValidationReport, Error> {
    let mut report = ValidationReport::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut customers: HashSet<String> = HashSet::new();
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        n += 1;
        let mut line = buf.as_slice();
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.lines += 1;
        match decode(line, now, limits) {
            Ok(ev) => {
                report.valid += 1;
                if !seen.insert(ev.event_id) {
                    report.duplicate_event_ids += 1;
                }
                let t = ev.occurred_at;
                report.first_event = Some(report.first_event.map_or(t, |f| f.min(t)));
                report.last_event = Some(report.last_event.map_or(t, |l| l.max(t)));
                customers.insert(ev.customer_id);
            }
            Err(rej) => {
                report.rejected += 1;
                *report.by_reason.entry(rej.code()).or_default() += 1;
                if report.examples.len() < MAX_EXAMPLES {
                    report.examples.push(RejectedLine {
                        line: n,
                        reason: rej.code(),
                        detail: rej.to_string(),
                    });
                }
                on_reject(n, &rej, line)?;
            }
        }
    }
    report.customers = customers.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reasons_duplicates_and_keeps_line_numbers() {
        let good = r#"{"event_id":"e1","customer_id":"c1","occurred_at":"2026-01-01T00:00:00Z","type":"engagement","kind":"login"}"#;
        let good2 = r#"{"event_id":"e2","customer_id":"c2","occurred_at":"2026-01-03T00:00:00Z","type":"feedback","nps_score":9}"#;
        let negative = r#"{"event_id":"e3","customer_id":"c1","occurred_at":"2026-01-02T00:00:00Z","type":"purchase","order_id":"o","amount":-5,"currency":"EUR","items":1}"#;
        let nps = r#"{"event_id":"e4","customer_id":"c1","occurred_at":"2026-01-02T00:00:00Z","type":"feedback","nps_score":11}"#;
        let mut input = Vec::new();
        for l in [good, "", negative, "not json", good, nps, good2] {
            input.extend_from_slice(l.as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        input.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let now = "2026-02-01T00:00:00Z".parse().expect("timestamp");
        let mut rejected_lines = Vec::new();
        let report = validate_lines(
            input.as_slice(),
            &DecodeLimits::default(),
            now,
            |line, rej, bytes| {
                rejected_lines.push((line, rej.code(), bytes.len()));
                Ok(())
            },
        )
        .expect("reading from memory");
        assert_eq!(report.lines, 7, "the blank line is skipped");
        assert_eq!(report.valid, 3);
        assert_eq!(report.rejected, 4);
        assert_eq!(report.duplicate_event_ids, 1);
        assert_eq!(report.customers, 2);
        let want: BTreeMap<&str, usize> = [
            ("negative_amount", 1),
            ("malformed_json", 1),
            ("nps_out_of_range", 1),
            ("invalid_utf8", 1),
        ]
        .into_iter()
        .collect();
        // "not json" and nothing else is malformed; the duplicate is valid.
        assert_eq!(report.by_reason, want);
        assert_eq!(
            rejected_lines,
            vec![
                (3, "negative_amount", negative.len()),
                (4, "malformed_json", 8),
                (6, "nps_out_of_range", nps.len()),
                (8, "invalid_utf8", 2),
            ]
        );
        assert_eq!(report.examples.len(), 4);
        assert!(report.examples[0].detail.starts_with("negative_amount:"));
        assert_eq!(
            report.first_event,
            Some("2026-01-01T00:00:00Z".parse().expect("timestamp"))
        );
        assert_eq!(
            report.last_event,
            Some("2026-01-03T00:00:00Z".parse().expect("timestamp"))
        );
    }

    #[test]
    fn reject_record_keeps_reason_and_raw_text() {
        let rej = Rejection::NpsOutOfRange("11".into());
        let v = reject_record(7, &rej, b"{\"nps_score\":11}");
        assert_eq!(v["line"], 7);
        assert_eq!(v["reason"], "nps_out_of_range");
        assert_eq!(v["raw"], "{\"nps_score\":11}");
        assert!(v["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("nps_out_of_range:")));
    }

    #[test]
    fn limits_follow_the_pipeline_config() {
        let p = PipelineConfig {
            max_event_bytes: 100,
            max_future_hours: 2,
            ..PipelineConfig::default()
        };
        let l = limits(&p);
        assert_eq!(l.max_bytes, 100);
        assert_eq!(l.max_future, chrono::Duration::hours(2));
        let future = r#"{"event_id":"e1","customer_id":"c1","occurred_at":"2026-01-01T03:00:00Z","type":"engagement","kind":"login"}"#;
        let now = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        let r = validate_lines(future.as_bytes(), &l, now, |_, _, _| Ok(())).expect("memory");
        assert_eq!(r.by_reason.get("oversize"), Some(&1), "{r:?}");
        let l = DecodeLimits {
            max_bytes: 1000,
            ..l
        };
        let r = validate_lines(future.as_bytes(), &l, now, |_, _, _| Ok(())).expect("memory");
        assert_eq!(r.by_reason.get("future_timestamp"), Some(&1), "{r:?}");
    }
}
