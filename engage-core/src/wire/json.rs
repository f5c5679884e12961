//! Writing JSON: strings escaped a word at a time, integers through `itoa`, floats in
//! their shortest round-trip form through `zmij` (serde_json's own formatter).

use crate::model::Number;
use crate::validate::Problem;
use crate::validate::rules;

/// 0: copy as is; `u`: `\u00XX`; otherwise the letter after the backslash.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

static HEX: &[u8; 16] = b"0123456789abcdef";

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes in `chunk` needs escaping: below 0x20, `"` or `\\`.
/// Bit tricks on a whole word ("has less than" / "has zero byte"): exact for the
/// existence test, which is all the fast path needs.
#[inline(always)]
fn any_to_escape(chunk: u64) -> bool {
    escape_mask(chunk) != 0
}

/// The high bit of each byte of `chunk` (little-endian) that may need escaping. The lowest
/// bit set is exact (a borrow only runs upwards from a byte that does), so
/// `trailing_zeros() / 8` is the index of the first byte to look at.
#[inline(always)]
pub(crate) fn escape_mask(chunk: u64) -> u64 {
    let control = chunk.wrapping_sub(LO * 0x20) & !chunk & HI;
    let q = chunk ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q & HI;
    let b = chunk ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b & HI;
    control | quote | backslash
}

/// Escapes `bytes[from..to]` byte by byte, copying runs; `start` is the first byte not
/// yet copied. Returns the new `start`.
fn escape_range(
    out: &mut Vec<u8>,
    bytes: &[u8],
    from: usize,
    to: usize,
    mut start: usize,
) -> usize {
    let mut i = from;
    while i < to {
        let b = bytes[i];
        let esc = ESCAPE[b as usize];
        if esc != 0 {
            out.extend_from_slice(&bytes[start..i]);
            if esc == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', esc]);
            }
            start = i + 1;
        }
        i += 1;
    }
    start
}

/// Whether any byte of `bytes` needs escaping, a word at a time: 8-byte words, the tail as
/// the last (overlapping) word, short strings as two overlapping 4-byte halves.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len >= 8 {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            if any_to_escape(u64::from_le_bytes(word.try_into().expect("8 bytes"))) {
                return true;
            }
        }
        !words.remainder().is_empty()
            && any_to_escape(u64::from_le_bytes(
                bytes[len - 8..].try_into().expect("8 bytes"),
            ))
    } else if len >= 4 {
        let low = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
        let high = u32::from_le_bytes(bytes[len - 4..].try_into().expect("4 bytes"));
        any_to_escape(u64::from(low) | (u64::from(high) << 32))
    } else {
        bytes.iter().any(|&b| ESCAPE[b as usize] != 0)
    }
}

/// Writes `s` as a JSON string literal, quotes included. The common string is short and
/// needs no escaping: a few word tests and fixed-size moves, inlined where it is called;
/// anything else is written out of line.
#[inline(always)]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if bytes.len() <= SHORT && !needs_escape(bytes) {
        return write_short_str(out, bytes);
    }
    write_long_str(out, bytes);
}

/// [`write_str`] for a string that is long or needs escaping: one word test per 8 bytes,
/// then one copy, or the escaping walk.
#[inline(never)]
fn write_long_str(out: &mut Vec<u8>, bytes: &[u8]) {
    if needs_escape(bytes) {
        return write_escaped(out, bytes);
    }
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// The longest string [`write_short_str`] copies with fixed-size moves.
const SHORT: usize = 30;

/// Writes a short string that needs no escaping, quotes included, without a call to
/// `memcpy` (whose call costs more than the copy for a few bytes, and most property names
/// and values are a few bytes): a fixed 32-byte window is appended, the string written
/// into it with two overlapping fixed-size moves, and the window cut to length.
#[inline(always)]
fn write_short_str(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    debug_assert!(n <= SHORT);
    let at = out.len();
    out.extend_from_slice(&[b'"'; SHORT + 2]);
    let window = &mut out[at + 1..at + 1 + SHORT];
    copy_overlapping(window, bytes);
    out[at + 1 + n] = b'"';
    out.truncate(at + n + 2);
}

/// Writes an object member's key as JSON, with its comma before (unless it is the first)
/// and its colon after: `,"key":`. A key of at most 28 bytes that needs no escaping (most
/// struct fields' names) takes one fixed-size window, like [`write_short_str`]; inlined
/// where the key is a constant, it folds to a few stores.
#[inline(always)]
pub(crate) fn write_key(out: &mut Vec<u8>, first: bool, key: &str) {
    let bytes = key.as_bytes();
    let n = bytes.len();
    if n > SHORT - 2 || needs_escape(bytes) {
        if !first {
            out.push(b',');
        }
        write_long_str(out, bytes);
        out.push(b':');
        return;
    }
    let comma = usize::from(!first);
    let at = out.len();
    out.extend_from_slice(&[b','; SHORT + 2]);
    let window = &mut out[at + comma..at + SHORT + 2];
    window[0] = b'"';
    copy_overlapping(&mut window[1..], bytes);
    window[n + 1] = b'"';
    window[n + 2] = b':';
    out.truncate(at + comma + n + 3);
}

/// Copies `src` (at most 32 bytes) to the start of `dst` (at least as long) with
/// fixed-size moves: two overlapping ones of 16, 8 or 4 bytes, or byte by byte below 4.
#[inline(always)]
fn copy_overlapping(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if n >= 16 {
        dst[..16].copy_from_slice(&src[..16]);
        dst[n - 16..n].copy_from_slice(&src[n - 16..]);
    } else if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..n].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..n].copy_from_slice(&src[n - 4..]);
    } else if n > 0 {
        // One to three bytes: first, middle and last cover them all (a loop here becomes
        // a call to `memcpy`).
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
}

/// Appends `bytes` to `out`; a short run (a number, a key) by fixed-size moves rather
/// than a call to `memcpy`.
#[inline(always)]
pub(crate) fn extend_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    if n > 32 {
        return out.extend_from_slice(bytes);
    }
    let at = out.len();
    out.extend_from_slice(&[0; 32]);
    copy_overlapping(&mut out[at..at + 32], bytes);
    out.truncate(at + n);
}

/// The slow path of [`write_str`]: only words holding a byte to escape are walked byte by
/// byte; runs between escapes are copied whole.
#[cold]
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 8);
    out.push(b'"');
    let mut start = 0;
    let len = bytes.len();
    let mut i = 0;
    while i + 8 <= len {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if any_to_escape(word) {
            start = escape_range(out, bytes, i, i + 8, start);
        }
        i += 8;
    }
    start = escape_range(out, bytes, i, len, start);
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes any integer in decimal.
#[inline]
pub(crate) fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    extend_short(out, itoa::Buffer::new().format(v).as_bytes());
}

/// Writes a float in its shortest round-trip form; NaN and infinities have none.
#[inline]
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) -> Result<(), Problem> {
    rules::float(v)?;
    extend_short(out, zmij::Buffer::new().format_finite(v).as_bytes());
    Ok(())
}

pub(crate) fn write_number(out: &mut Vec<u8>, n: Number) -> Result<(), Problem> {
    match n {
        Number::Int(i) => write_int(out, i),
        Number::UInt(u) => write_int(out, u),
        Number::Float(f) => write_f64(out, f)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_test_finds_every_byte_to_escape() {
        for b in 0u8..=255 {
            for pos in 0..8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                let needs = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(
                    any_to_escape(u64::from_le_bytes(word)),
                    needs,
                    "byte {b:#x} at {pos}"
                );
            }
        }
        // Neighbouring high bytes never hide one.
        let word = [0xff, 0x1f, 0x80, b'"', 0xc3, 0xa9, b'\\', 0x00];
        assert!(any_to_escape(u64::from_le_bytes(word)));
    }

    #[test]
    fn every_short_length_is_written_whole() {
        let text: String = ('a'..='z').chain('A'..='Z').collect();
        for n in 0..=text.len() {
            let s = &text[..n];
            let mut out = b"[".to_vec();
            write_str(&mut out, s);
            assert_eq!(out[1..], serde_json::to_vec(s).unwrap(), "length {n}");
            let mut out = b"[".to_vec();
            extend_short(&mut out, s.as_bytes());
            assert_eq!(&out[1..], s.as_bytes(), "length {n}");
        }
        // A multi-byte character across the windows' seams.
        for n in 0..40 {
            let s = format!("{}é{}", "x".repeat(n), "y".repeat(40 - n));
            let mut out = Vec::new();
            write_str(&mut out, &s[..s.len() - 40 + n]);
            assert_eq!(out, serde_json::to_vec(&s[..s.len() - 40 + n]).unwrap());
        }
    }

    #[test]
    fn keys_are_written_with_their_comma_and_colon() {
        let text: String = ('a'..='z').chain('A'..='Z').collect();
        let keys = (0..=text.len()).map(|n| text[..n].to_owned()).chain([
            "q\"uote".into(),
            "tab\t".into(),
            "é😀".repeat(9),
        ]);
        for key in keys {
            for first in [true, false] {
                let mut out = b"{".to_vec();
                write_key(&mut out, first, &key);
                let comma = if first { "" } else { "," };
                let expected = format!("{{{comma}{}:", serde_json::to_string(&key).unwrap());
                assert_eq!(String::from_utf8(out).unwrap(), expected, "{key:?}");
            }
        }
    }

    #[test]
    fn long_strings_escape_like_json() {
        let s = "plain words then \"quotes\" and \\ and\n\tcontrols\u{1}é😀 over several words";
        let mut out = Vec::new();
        write_str(&mut out, s);
        assert_eq!(out, serde_json::to_vec(s).unwrap());
    }

    #[test]
    fn escapes_like_json() {
        let s = "q\"b\\n\nt\tc\u{1}\u{7f}é😀\u{2028}";
        let mut out = Vec::new();
        write_str(&mut out, s);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "\"q\\\"b\\\\n\\nt\\tc\\u0001\u{7f}é😀\u{2028}\""
        );
    }
}
