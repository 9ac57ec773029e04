//! Bytes → validated [`Event`], with a precise [`Rejection`] for everything else.
//!
//! Decoding goes through a flat, borrowing "raw" struct whose fields accept any JSON value, so a
//! wrong type becomes a field-specific reason ("amount is not a number") instead of serde's
//! generic message, and so one pass over the bytes suffices (no intermediate `Value` tree).

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::{
    Engagement, EngagementKind, Event, Feedback, Payload, Purchase, Subscription,
    SubscriptionAction,
};

/// Bounds applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeLimits {
    /// Largest accepted payload in bytes.
    pub max_bytes: usize,
    /// How far in the future `occurred_at` may be relative to the decoder's clock.
    pub max_future: Duration,
    /// Longest accepted id/string field, in bytes.
    pub max_field_len: usize,
    /// How far in the past `occurred_at` may be relative to the decoder's clock (`None`: no
    /// bound). An ancient timestamp would skip the warm-up and make day scans O(days).
    pub max_past: Option<Duration>,
    /// Largest accepted value of a numeric field (`amount`, `discount`, `duration_s`, `mrr`):
    /// a value near `f64::MAX` overflows sums and features to infinity and the risk to NaN.
    pub max_number: f64,
}

/// Default of [`DecodeLimits::max_past`]: ten years, in days.
pub const DEFAULT_MAX_PAST_DAYS: i64 = 3653;
/// Default of [`DecodeLimits::max_number`].
pub const DEFAULT_MAX_NUMBER: f64 = 1e9;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 64 * 1024,
            max_future: Duration::hours(24),
            max_field_len: 256,
            max_past: Some(Duration::days(DEFAULT_MAX_PAST_DAYS)),
            max_number: DEFAULT_MAX_NUMBER,
        }
    }
}

/// Why an input was rejected. [`Rejection::code`] is stable and low-cardinality (for metric labels
/// and the `error.reason` header prefix); `Display` adds the detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("oversize: payload is {len} bytes, limit is {max}")]
    Oversize { len: usize, max: usize },
    #[error("invalid_utf8: payload is not valid UTF-8 (first bad byte at offset {at})")]
    InvalidUtf8 { at: usize },
    #[error("malformed_json: {0}")]
    MalformedJson(String),
    #[error("missing_field: `{0}` is required")]
    MissingField(&'static str),
    #[error("empty_field: `{0}` must not be empty")]
    EmptyField(&'static str),
    #[error("field_too_long: `{field}` is {len} bytes, limit is {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("wrong_type: `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error(
        "unknown_type: event type `{0}` is not one of purchase, engagement, feedback, subscription"
    )]
    UnknownType(String),
    #[error("unknown_value: `{field}` = `{value}` is not a known value")]
    UnknownValue { field: &'static str, value: String },
    #[error("not_a_number: `{0}` must be a JSON number")]
    NotANumber(&'static str),
    #[error("negative_amount: `{field}` = {value} must be >= 0")]
    NegativeAmount { field: &'static str, value: f64 },
    #[error("nps_out_of_range: nps_score {0} is not an integer in 0..=10")]
    NpsOutOfRange(String),
    #[error("bad_timestamp: occurred_at `{0}` is not an RFC 3339 timestamp")]
    BadTimestamp(String),
    #[error("future_timestamp: occurred_at {at} is more than {max_hours} h ahead of now ({now})")]
    FutureTimestamp {
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        max_hours: i64,
    },
    #[error("ancient_timestamp: occurred_at {at} is more than {max_days} days before now ({now}; `pipeline.max_past_days`, 0 = no bound)")]
    AncientTimestamp {
        at: DateTime<Utc>,
        now: DateTime<Utc>,
        max_days: i64,
    },
    #[error("out_of_range: `{field}` = {value} is larger than {max}")]
    OutOfRange {
        field: &'static str,
        value: f64,
        max: f64,
    },
    #[error("key_mismatch: message key `{key}` is not the event's customer_id `{customer_id}` (input topics must be keyed by customer_id, or a customer's events land on another partition than its state)")]
    KeyMismatch { key: String, customer_id: String },
}

impl Rejection {
    /// Stable reason code (metric label, first word of the `error.reason` header).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Oversize { .. } => "oversize",
            Rejection::InvalidUtf8 { .. } => "invalid_utf8",
            Rejection::MalformedJson(_) => "malformed_json",
            Rejection::MissingField(_) => "missing_field",
            Rejection::EmptyField(_) => "empty_field",
            Rejection::FieldTooLong { .. } => "field_too_long",
            Rejection::WrongType { .. } => "wrong_type",
            Rejection::UnknownType(_) => "unknown_type",
            Rejection::UnknownValue { .. } => "unknown_value",
            Rejection::NotANumber(_) => "not_a_number",
            Rejection::NegativeAmount { .. } => "negative_amount",
            Rejection::NpsOutOfRange(_) => "nps_out_of_range",
            Rejection::BadTimestamp(_) => "bad_timestamp",
            Rejection::FutureTimestamp { .. } => "future_timestamp",
            Rejection::AncientTimestamp { .. } => "ancient_timestamp",
            Rejection::OutOfRange { .. } => "out_of_range",
            Rejection::KeyMismatch { .. } => "key_mismatch",
        }
    }

    /// Every reason code, for pre-registering metric label values.
    pub const CODES: [&'static str; 17] = [
        "oversize",
        "invalid_utf8",
        "malformed_json",
        "missing_field",
        "empty_field",
        "field_too_long",
        "wrong_type",
        "unknown_type",
        "unknown_value",
        "not_a_number",
        "negative_amount",
        "nps_out_of_range",
        "bad_timestamp",
        "future_timestamp",
        "ancient_timestamp",
        "out_of_range",
        "key_mismatch",
    ];
}

/// Any JSON value, keeping only what validation needs.
#[derive(Debug)]
enum Field<'a> {
    Null,
    Bool,
    Num(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Field<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Bool)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Num(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Field::Num(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Object)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The flat wire shape: every known field of every event type, each optional and untyped.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Raw<'a> {
    #[serde(borrow)]
    event_id: Option<Field<'a>>,
    #[serde(borrow)]
    customer_id: Option<Field<'a>>,
    #[serde(borrow)]
    occurred_at: Option<Field<'a>>,
    #[serde(borrow, rename = "type")]
    ty: Option<Field<'a>>,
    #[serde(borrow)]
    order_id: Option<Field<'a>>,
    #[serde(borrow)]
    amount: Option<Field<'a>>,
    #[serde(borrow)]
    currency: Option<Field<'a>>,
    #[serde(borrow)]
    items: Option<Field<'a>>,
    #[serde(borrow)]
    discount: Option<Field<'a>>,
    #[serde(borrow)]
    kind: Option<Field<'a>>,
    #[serde(borrow)]
    duration_s: Option<Field<'a>>,
    #[serde(borrow)]
    feature: Option<Field<'a>>,
    #[serde(borrow)]
    nps_score: Option<Field<'a>>,
    #[serde(borrow)]
    comment: Option<Field<'a>>,
    #[serde(borrow)]
    channel: Option<Field<'a>>,
    #[serde(borrow)]
    action: Option<Field<'a>>,
    #[serde(borrow)]
    plan: Option<Field<'a>>,
    #[serde(borrow)]
    mrr: Option<Field<'a>>,
}

/// Top level must be an object; checked before field extraction for a precise reason.
fn first_non_ws(s: &str) -> Option<u8> {
    s.bytes().find(|b| !b.is_ascii_whitespace())
}

/// Decode and validate one message payload. `now` bounds how far in the future `occurred_at` may be.
pub fn decode(bytes: &[u8], now: DateTime<Utc>, limits: &DecodeLimits) -> Result<Event, Rejection> {
    if bytes.len() > limits.max_bytes {
        return Err(Rejection::Oversize {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| Rejection::InvalidUtf8 {
        at: e.valid_up_to(),
    })?;
    if first_non_ws(text) != Some(b'{') {
        return Err(Rejection::MalformedJson(
            "top-level value must be a JSON object".into(),
        ));
    }
    let raw: Raw<'_> =
        serde_json::from_str(text).map_err(|e| Rejection::MalformedJson(e.to_string()))?;
    validate(raw, now, limits)
}

struct Ctx<'l> {
    limits: &'l DecodeLimits,
}

impl Ctx<'_> {
    fn string(&self, name: &'static str, f: Option<Field<'_>>) -> Result<String, Rejection> {
        self.text(name, f).map(Cow::into_owned)
    }

    /// A required, non-empty string field, borrowed from the input where it has no escapes
    /// (for fields that are only parsed or matched, never kept).
    fn text<'a>(
        &self,
        name: &'static str,
        f: Option<Field<'a>>,
    ) -> Result<Cow<'a, str>, Rejection> {
        match f {
            None | Some(Field::Null) => Err(Rejection::MissingField(name)),
            Some(Field::Str(s)) => {
                if s.trim().is_empty() {
                    Err(Rejection::EmptyField(name))
                } else if s.len() > self.limits.max_field_len {
                    Err(Rejection::FieldTooLong {
                        field: name,
                        len: s.len(),
                        max: self.limits.max_field_len,
                    })
                } else {
                    Ok(s)
                }
            }
            Some(_) => Err(Rejection::WrongType {
                field: name,
                expected: "a string",
            }),
        }
    }

    fn opt_string(
        &self,
        name: &'static str,
        f: Option<Field<'_>>,
    ) -> Result<Option<String>, Rejection> {
        match f {
            None | Some(Field::Null) => Ok(None),
            Some(Field::Str(s)) if s.len() > self.limits.max_field_len * 16 => {
                Err(Rejection::FieldTooLong {
                    field: name,
                    len: s.len(),
                    max: self.limits.max_field_len * 16,
                })
            }
            Some(Field::Str(s)) => Ok(Some(s.into_owned())),
            Some(_) => Err(Rejection::WrongType {
                field: name,
                expected: "a string",
            }),
        }
    }
}

fn number(name: &'static str, f: Option<Field<'_>>) -> Result<f64, Rejection> {
    match f {
        None | Some(Field::Null) => Err(Rejection::MissingField(name)),
        Some(Field::Num(v)) => Ok(v),
        Some(_) => Err(Rejection::NotANumber(name)),
    }
}

impl Ctx<'_> {
    /// A number in `0..=max_number`.
    fn bounded(&self, name: &'static str, v: f64) -> Result<f64, Rejection> {
        if v < 0.0 {
            Err(Rejection::NegativeAmount {
                field: name,
                value: v,
            })
        } else if v > self.limits.max_number {
            Err(Rejection::OutOfRange {
                field: name,
                value: v,
                max: self.limits.max_number,
            })
        } else {
            Ok(v)
        }
    }

    fn opt_bounded(
        &self,
        name: &'static str,
        f: Option<Field<'_>>,
    ) -> Result<Option<f64>, Rejection> {
        match f {
            None | Some(Field::Null) => Ok(None),
            other => self.bounded(name, number(name, other)?).map(Some),
        }
    }
}

/// Longest part of a message key quoted in a [`Rejection::KeyMismatch`].
const KEY_QUOTE_MAX: usize = 64;

/// A Kafka message's key must be its event's `customer_id`: input topics are keyed by it, so
/// that all of a customer's events share one partition (and the instance holding its state). A
/// message without a key passes (it cannot be checked); one with another key is a
/// [`Rejection::KeyMismatch`].
pub fn check_key(key: Option<&[u8]>, ev: &Event) -> Result<(), Rejection> {
    match key {
        Some(k) if k != ev.customer_id.as_bytes() => {
            let shown = &k[..k.len().min(KEY_QUOTE_MAX)];
            let mut key = String::from_utf8_lossy(shown).into_owned();
            if k.len() > KEY_QUOTE_MAX {
                key.push('…');
            }
            Err(Rejection::KeyMismatch {
                key,
                customer_id: ev.customer_id.clone(),
            })
        }
        _ => Ok(()),
    }
}

fn validate(raw: Raw<'_>, now: DateTime<Utc>, limits: &DecodeLimits) -> Result<Event, Rejection> {
    let cx = Ctx { limits };
    let ty = cx.text("type", raw.ty)?;
    let customer_id = cx.string("customer_id", raw.customer_id)?;
    let event_id = cx.string("event_id", raw.event_id)?;
    let ts = cx.text("occurred_at", raw.occurred_at)?;
    let occurred_at = DateTime::parse_from_rfc3339(&ts)
        .map_err(|_| Rejection::BadTimestamp(ts.to_string()))?
        .with_timezone(&Utc);
    if occurred_at > now + limits.max_future {
        return Err(Rejection::FutureTimestamp {
            at: occurred_at,
            now,
            max_hours: limits.max_future.num_hours(),
        });
    }
    if let Some(oldest) = limits.max_past.and_then(|p| now.checked_sub_signed(p)) {
        if occurred_at < oldest {
            return Err(Rejection::AncientTimestamp {
                at: occurred_at,
                now,
                max_days: limits.max_past.map_or(0, |p| p.num_days()),
            });
        }
    }
    let payload = match &*ty {
        "purchase" => {
            let amount = cx.bounded("amount", number("amount", raw.amount)?)?;
            let items = number("items", raw.items)?;
            if items < 0.0 || items.fract() != 0.0 || items > u32::MAX as f64 {
                return Err(Rejection::WrongType {
                    field: "items",
                    expected: "a non-negative integer",
                });
            }
            Payload::Purchase(Purchase {
                order_id: cx.string("order_id", raw.order_id)?,
                amount,
                currency: cx.string("currency", raw.currency)?,
                items: items as u32,
                discount: cx.opt_bounded("discount", raw.discount)?,
            })
        }
        "engagement" => {
            let kind = cx.text("kind", raw.kind)?;
            let kind = EngagementKind::parse(&kind).ok_or_else(|| Rejection::UnknownValue {
                field: "kind",
                value: kind.to_string(),
            })?;
            Payload::Engagement(Engagement {
                kind,
                duration_s: cx.opt_bounded("duration_s", raw.duration_s)?,
                feature: cx.opt_string("feature", raw.feature)?,
            })
        }
        "feedback" => {
            let score = number("nps_score", raw.nps_score)?;
            if !(0.0..=10.0).contains(&score) || score.fract() != 0.0 {
                return Err(Rejection::NpsOutOfRange(score.to_string()));
            }
            Payload::Feedback(Feedback {
                nps_score: score as u8,
                comment: cx.opt_string("comment", raw.comment)?,
                channel: cx.opt_string("channel", raw.channel)?,
            })
        }
        "subscription" => {
            let action = cx.text("action", raw.action)?;
            let action =
                SubscriptionAction::parse(&action).ok_or_else(|| Rejection::UnknownValue {
                    field: "action",
                    value: action.to_string(),
                })?;
            Payload::Subscription(Subscription {
                action,
                plan: cx.string("plan", raw.plan)?,
                mrr: cx.bounded("mrr", number("mrr", raw.mrr)?)?,
            })
        }
        _ => return Err(Rejection::UnknownType(ty.into_owned())),
    };
    Ok(Event {
        event_id,
        customer_id,
        occurred_at,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .expect("valid literal")
    }

    fn dec(s: &str) -> Result<Event, Rejection> {
        decode(s.as_bytes(), now(), &DecodeLimits::default())
    }

    const PURCHASE: &str = r#"{"event_id":"e1","customer_id":"c1","occurred_at":"2026-02-01T10:00:00Z","type":"purchase","order_id":"o1","amount":12.5,"currency":"EUR","items":2}"#;

    #[test]
    fn decodes_a_valid_purchase_and_round_trips() {
        let ev = dec(PURCHASE).expect("valid");
        assert_eq!(ev.customer_id, "c1");
        match &ev.payload {
            Payload::Purchase(p) => {
                assert_eq!(p.amount, 12.5);
                assert_eq!(p.items, 2);
            }
            other => panic!("wrong payload {other:?}"),
        }
        let again = decode(&ev.to_json(), now(), &DecodeLimits::default()).expect("round trip");
        assert_eq!(again, ev);
    }

    #[test]
    fn each_reason_is_precise() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"refund"}"#,
                "unknown_type",
            ),
            (
                r#"{"event_id":"e","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":3}"#,
                "missing_field",
            ),
            (
                r#"{"event_id":"e","customer_id":"","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":3}"#,
                "empty_field",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"purchase","order_id":"o","amount":-1,"currency":"EUR","items":1}"#,
                "negative_amount",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"purchase","order_id":"o","amount":"12","currency":"EUR","items":1}"#,
                "not_a_number",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":11}"#,
                "nps_out_of_range",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":7.5}"#,
                "nps_out_of_range",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"yesterday","type":"feedback","nps_score":7}"#,
                "bad_timestamp",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"9999-01-01T00:00:00Z","type":"feedback","nps_score":7}"#,
                "future_timestamp",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-03-01T23:00:00Z","type":"feedback","nps_score":7}"#,
                "ok",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-03-02T01:00:00Z","type":"feedback","nps_score":7}"#,
                "future_timestamp",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"engagement","kind":"teleport"}"#,
                "unknown_value",
            ),
            (
                r#"{"event_id":"e","customer_id":7,"occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":7}"#,
                "wrong_type",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"purch"#,
                "malformed_json",
            ),
            (r#"[1,2,3]"#, "malformed_json"),
            (r#"{"amount": NaN}"#, "malformed_json"),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"purchase","order_id":"o","amount":1e308,"currency":"EUR","items":1}"#,
                "out_of_range",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"purchase","order_id":"o","amount":1e9,"currency":"EUR","items":1,"discount":1e10}"#,
                "out_of_range",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"subscription","action":"start","plan":"p","mrr":2e9}"#,
                "out_of_range",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"engagement","kind":"login","duration_s":1e12}"#,
                "out_of_range",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"1970-01-01T00:00:00Z","type":"feedback","nps_score":7}"#,
                "ancient_timestamp",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2016-02-28T00:00:00Z","type":"feedback","nps_score":7}"#,
                "ancient_timestamp",
            ),
            (
                r#"{"event_id":"e","customer_id":"c","occurred_at":"2016-03-02T00:00:00Z","type":"feedback","nps_score":7}"#,
                "ok",
            ),
        ];
        for (input, want) in cases {
            let got = match dec(input) {
                Ok(_) => "ok",
                Err(r) => r.code(),
            };
            assert_eq!(got, *want, "input: {input}");
        }
    }

    #[test]
    fn the_past_bound_can_be_lifted() {
        let old = r#"{"event_id":"e","customer_id":"c","occurred_at":"1999-12-31T00:00:00Z","type":"feedback","nps_score":7}"#;
        let open = DecodeLimits {
            max_past: None,
            ..DecodeLimits::default()
        };
        assert!(decode(old.as_bytes(), now(), &open).is_ok());
        let huge = DecodeLimits {
            max_past: Some(Duration::MAX),
            ..DecodeLimits::default()
        };
        assert!(decode(old.as_bytes(), now(), &huge).is_ok(), "no overflow");
    }

    #[test]
    fn a_key_other_than_the_customer_id_is_rejected() {
        let ev = dec(r#"{"event_id":"e","customer_id":"c-1","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":7}"#)
            .expect("valid");
        assert_eq!(check_key(Some(b"c-1"), &ev), Ok(()));
        assert_eq!(check_key(None, &ev), Ok(()), "no key: nothing to check");
        let r = check_key(Some(b"c-2"), &ev).expect_err("other key");
        assert_eq!(r.code(), "key_mismatch");
        assert!(r.to_string().contains("`c-2`") && r.to_string().contains("`c-1`"));
        let long = vec![b'k'; 10_000];
        let r = check_key(Some(&long), &ev).expect_err("long key");
        assert!(r.to_string().len() < 400, "the key is quoted truncated");
    }

    #[test]
    fn byte_level_rejections() {
        let limits = DecodeLimits::default();
        let big = vec![b' '; limits.max_bytes + 1];
        assert_eq!(
            decode(&big, now(), &limits).map_err(|r| r.code()),
            Err("oversize")
        );
        let bad = b"{\"event_id\":\"\xff\xfe\"}";
        assert_eq!(
            decode(bad, now(), &limits).map_err(|r| r.code()),
            Err("invalid_utf8")
        );
        let deep = "[".repeat(5000);
        assert_eq!(dec(&deep).map_err(|r| r.code()), Err("malformed_json"));
        let deep_obj = format!("{{\"x\":{}", "[".repeat(5000));
        assert_eq!(dec(&deep_obj).map_err(|r| r.code()), Err("malformed_json"));
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let s = PURCHASE.replace("\"items\":2", "\"items\":2,\"extra\":{\"a\":[1,2]}");
        assert!(dec(&s).is_ok());
    }

    #[test]
    fn reason_display_starts_with_code() {
        let r = dec(r#"{"event_id":"e","customer_id":"c","occurred_at":"2026-02-01T10:00:00Z","type":"feedback","nps_score":42}"#)
            .expect_err("must reject");
        assert!(r.to_string().starts_with(r.code()), "{r}");
        assert!(Rejection::CODES.contains(&r.code()));
    }
}
