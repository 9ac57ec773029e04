//! Dead-letter records that always fit the producer's `message.max.bytes`.
//!
//! A rejected record is dead-lettered with its original key, headers and bytes. The broker may
//! have taken a record our producer cannot send back (a topic whose `max.message.bytes` was
//! raised, or tansu, which has no limit), and a key or headers can be as large as the payload:
//! a dead letter that fails with `MsgSizeTooLarge` stops the service without storing the offset,
//! the restart reads the same record again, and the pipeline is wedged (a poison pill). So each
//! part gets a budget, and what is cut is said in a header:
//!
//! - the key: at most [`MAX_KEY_BYTES`], else its head and `error.truncated_key_from_bytes`;
//! - the original headers: in order while they fit [`MAX_HEADER_BYTES`], the rest dropped and
//!   counted in `error.dropped_headers`;
//! - the payload: whatever is left of the limit, else its head and `error.truncated_from_bytes`.
//!
//! The original record stays at `source.topic`/`source.partition`/`source.offset` for the topic's
//! retention.

/// Longest key a dead letter keeps.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most bytes of original headers (names and values) a dead letter keeps.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// Room left for the headers the dead letter adds (`error.*`, `source.*`) and record overhead.
const OWN_HEADROOM: usize = 16 * 1024;

/// A dead letter's parts, cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded<'a> {
    pub key: Option<&'a [u8]>,
    /// The original headers kept, in order.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    pub payload: &'a [u8],
    /// Headers saying what was cut (`error.truncated_key_from_bytes`, `error.dropped_headers`,
    /// `error.truncated_from_bytes`), to add to the record.
    pub notes: Vec<(&'static str, String)>,
}

/// Cut `key`, `headers` and `payload` so that the record fits in `limit` bytes (the producer's
/// `message.max.bytes`) with room for the dead letter's own headers.
pub fn bound<'a>(
    key: Option<&'a [u8]>,
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    payload: &'a [u8],
    limit: usize,
) -> Bounded<'a> {
    let mut notes = Vec::new();
    let key = key.map(|k| {
        if k.len() > MAX_KEY_BYTES {
            notes.push(("error.truncated_key_from_bytes", k.len().to_string()));
            &k[..MAX_KEY_BYTES]
        } else {
            k
        }
    });
    let mut kept = Vec::new();
    let mut header_bytes = 0usize;
    let mut dropped = 0usize;
    for (name, value) in headers {
        let size = name.len() + value.map_or(0, <[u8]>::len);
        if dropped == 0 && header_bytes + size <= MAX_HEADER_BYTES {
            header_bytes += size;
            kept.push((name, value));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        notes.push(("error.dropped_headers", dropped.to_string()));
    }
    let room = limit
        .saturating_sub(OWN_HEADROOM)
        .saturating_sub(key.map_or(0, <[u8]>::len))
        .saturating_sub(header_bytes)
        .max(1024);
    let payload = if payload.len() > room {
        notes.push(("error.truncated_from_bytes", payload.len().to_string()));
        &payload[..room]
    } else {
        payload
    };
    Bounded {
        key,
        headers: kept,
        payload,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_records_pass_unchanged() {
        let h = [("ce_id", Some(&b"a1"[..])), ("empty", None)];
        let b = bound(Some(b"cust-1"), h, b"{}", 1_000_000);
        assert_eq!(b.key, Some(&b"cust-1"[..]));
        assert_eq!(b.headers, h.to_vec());
        assert_eq!(b.payload, b"{}");
        assert!(b.notes.is_empty());
    }

    #[test]
    fn every_part_is_cut_to_fit_and_the_cut_is_said() {
        let key = vec![b'k'; 900_000];
        let value = vec![b'v'; 20_000];
        let headers: Vec<(&str, Option<&[u8]>)> =
            (0..10).map(|_| ("h", Some(&value[..]))).collect();
        let payload = vec![b'p'; 2_000_000];
        let limit = 1_000_000;
        let b = bound(Some(&key), headers, &payload, limit);
        let size = b.key.map_or(0, <[u8]>::len)
            + b.headers
                .iter()
                .map(|(n, v)| n.len() + v.map_or(0, <[u8]>::len))
                .sum::<usize>()
            + b.payload.len();
        assert!(size + OWN_HEADROOM <= limit, "{size} bytes");
        assert_eq!(b.key.map(<[u8]>::len), Some(MAX_KEY_BYTES));
        assert_eq!(
            b.headers.len(),
            1,
            "one 20 kB header fits 32 kB, two do not"
        );
        let notes: std::collections::BTreeMap<_, _> = b.notes.into_iter().collect();
        assert_eq!(notes["error.truncated_key_from_bytes"], "900000");
        assert_eq!(notes["error.dropped_headers"], "9");
        assert_eq!(notes["error.truncated_from_bytes"], "2000000");
    }
}
