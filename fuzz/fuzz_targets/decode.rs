//! The ingest decoder/validator on arbitrary bytes: it must never panic, and what it accepts
//! must serialize and decode again to the same event (the DLQ/accept decision is stable).
#![no_main]

use chrono::{TimeZone, Utc};
use churn_events::{decode, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let limits = DecodeLimits::default();
    if let Ok(ev) = decode(data, now, &limits) {
        let again = decode(&ev.to_json(), now, &limits).expect("an accepted event re-decodes");
        assert_eq!(again, ev, "round trip");
    }
});
