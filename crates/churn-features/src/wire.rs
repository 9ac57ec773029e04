//! A compact binary encoding for state records (the per-customer changelog of the streaming
//! stage): LEB128 varints, zigzag for signed integers, little-endian `f64` bits (exact, `-0.0`
//! kept), and presence bit masks instead of JSON's field names. Every read is bounds-checked:
//! [`Reader`] returns [`WireError`] on truncated or malformed input and never panics or
//! allocates more than the input could describe.

/// A malformed binary state record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("state record truncated (needed {needed} more bytes at offset {at})")]
    Truncated { at: usize, needed: usize },
    #[error("state record: varint longer than 64 bits at offset {0}")]
    VarintOverflow(usize),
    #[error("state record: {what} at offset {at}")]
    Invalid { what: &'static str, at: usize },
    #[error("state record: {0} trailing bytes")]
    Trailing(usize),
}

/// Where encoded bytes go: a `Vec<u8>`, or a [`Scratch`] buffer on the stack.
pub trait Out {
    fn put(&mut self, b: u8);
    fn put_slice(&mut self, s: &[u8]);
}

impl Out for Vec<u8> {
    fn put(&mut self, b: u8) {
        self.push(b);
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }
}

/// A fixed stack buffer for one small encoded value whose size is bounded by construction (a
/// day row is at most [`Scratch::CAP`] bytes): encoding there first lets the caller grow its own
/// buffer by exactly what is needed. Writing past `CAP` is a bug and panics.
pub struct Scratch {
    buf: [u8; Scratch::CAP],
    len: usize,
}

impl Scratch {
    pub const CAP: usize = 576;

    pub fn new() -> Self {
        Scratch {
            buf: [0; Scratch::CAP],
            len: 0,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Out for Scratch {
    fn put(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }
}

/// Append `v` as an unsigned LEB128 varint.
pub fn put_uvar(out: &mut impl Out, mut v: u64) {
    while v >= 0x80 {
        out.put((v as u8) | 0x80);
        v >>= 7;
    }
    out.put(v as u8);
}

/// Append `v` zigzag-encoded (small magnitudes of either sign take few bytes).
pub fn put_ivar(out: &mut impl Out, v: i64) {
    put_uvar(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Append the exact bits of `v`.
pub fn put_f64(out: &mut impl Out, v: f64) {
    out.put_slice(&v.to_le_bytes());
}

/// The presence mask of `fields`: each `(present, bit)` sets its bit when the value is there.
pub fn presence<T: Copy + Default + std::ops::BitOr<Output = T>>(fields: &[(bool, T)]) -> T {
    fields.iter().fold(
        T::default(),
        |m, &(present, bit)| if present { m | bit } else { m },
    )
}

/// A bounds-checked cursor over an encoded record.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Offset of the next byte (for error messages).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Move forward by `n` bytes (at most to the end).
    pub fn skip(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n).min(self.buf.len());
    }

    /// The bytes read since offset `start` (a value just validated, to keep as is).
    pub fn since(&self, start: usize) -> &'a [u8] {
        &self.buf[start.min(self.pos)..self.pos]
    }

    /// An error about the value that starts at the current position.
    pub fn invalid(&self, what: &'static str) -> WireError {
        WireError::Invalid { what, at: self.pos }
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated {
            at: self.pos,
            needed: 1,
        })?;
        self.pos += 1;
        Ok(b)
    }

    pub fn uvar(&mut self) -> Result<u64, WireError> {
        let start = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(WireError::VarintOverflow(start));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::VarintOverflow(start))
    }

    pub fn ivar(&mut self) -> Result<i64, WireError> {
        let u = self.uvar()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A zigzag varint that must fit an `i32` (day numbers).
    pub fn i32(&mut self) -> Result<i32, WireError> {
        let at = self.pos;
        i32::try_from(self.ivar()?).map_err(|_| WireError::Invalid {
            what: "value out of i32 range",
            at,
        })
    }

    /// A varint that must fit a `u32` (counts).
    pub fn u32(&mut self) -> Result<u32, WireError> {
        let at = self.pos;
        u32::try_from(self.uvar()?).map_err(|_| WireError::Invalid {
            what: "count out of u32 range",
            at,
        })
    }

    pub fn f64(&mut self) -> Result<f64, WireError> {
        let end = self.pos + 8;
        let bytes = self.buf.get(self.pos..end).ok_or(WireError::Truncated {
            at: self.pos,
            needed: end - self.buf.len().min(end),
        })?;
        let mut a = [0u8; 8];
        a.copy_from_slice(bytes);
        self.pos = end;
        Ok(f64::from_le_bytes(a))
    }

    /// A value behind a presence bit: `read` it if `present`, else `None`.
    pub fn opt<T, E: From<WireError>>(
        &mut self,
        present: bool,
        read: impl FnOnce(&mut Self) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        if present {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        let us = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ];
        let is = [0, -1, 1, -64, 64, i64::from(i32::MIN), i64::MIN, i64::MAX];
        let mut out = Vec::new();
        us.iter().for_each(|v| put_uvar(&mut out, *v));
        is.iter().for_each(|v| put_ivar(&mut out, *v));
        put_f64(&mut out, -0.0);
        let mut r = Reader::new(&out);
        for v in us {
            assert_eq!(r.uvar(), Ok(v));
        }
        for v in is {
            assert_eq!(r.ivar(), Ok(v));
        }
        assert_eq!(r.f64().map(f64::to_bits), Ok((-0.0f64).to_bits()));
        assert_eq!(r.finish(), Ok(()));
        assert_eq!(presence(&[(true, 1u8), (false, 2), (true, 8)]), 9);
        let mut r = Reader::new(&[7]);
        assert_eq!(r.opt(false, Reader::u8), Ok(None));
        assert_eq!(r.opt(true, Reader::u8), Ok(Some(7)));
        // One byte each for small magnitudes.
        let mut small = Vec::new();
        put_ivar(&mut small, -64);
        put_uvar(&mut small, 127);
        assert_eq!(small.len(), 2);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(matches!(
            Reader::new(&[0x80]).uvar(),
            Err(WireError::Truncated { at: 1, .. })
        ));
        assert_eq!(
            Reader::new(&[0xff; 11]).uvar(),
            Err(WireError::VarintOverflow(0))
        );
        // 2^64 does not fit.
        let mut big = vec![0x80; 9];
        big.push(0x02);
        assert_eq!(Reader::new(&big).uvar(), Err(WireError::VarintOverflow(0)));
        assert!(matches!(
            Reader::new(&[1, 2, 3]).f64(),
            Err(WireError::Truncated { needed: 5, .. })
        ));
        let mut out = Vec::new();
        put_ivar(&mut out, i64::from(i32::MAX) + 1);
        assert!(Reader::new(&out).i32().is_err());
        assert_eq!(Reader::new(&[0, 0]).finish(), Err(WireError::Trailing(2)));
    }
}
