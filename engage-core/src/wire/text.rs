//! Updates given as JSON text ([`Update::from_json`](crate::Update::from_json)): read in
//! one borrowed pass that checks the record by the rules of [`rules`] and copies it,
//! minified, into a shared arena. No `serde_json::Value`, no allocation per record once
//! warm.
//!
//! The pass takes on only what it can judge exactly the way the full path does
//! ([`parse_record`](crate::validate::parse_record) then
//! [`check_record`](crate::validate::check_record)): a valid record that draws no warning.
//! Anything else (any error, a repeated key, a string Mixpanel would truncate, an escape in
//! a key or an id, a number with an exponent, deep nesting) is handed to the full path, so
//! every error and warning comes from one place. A property test holds the two paths to
//! the same verdicts and the same bodies (`tests/text_path.rs`).

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::model::{Endpoint, OpKind, ProfileId};
use crate::validate::rules::{MAX_STRING_BYTES, MODIFIERS, modifier_type};
use crate::wire::json::escape_mask;

/// Deepest nesting the pass follows inside a property's value; deeper goes to the full
/// path (which knows [`MAX_DEPTH`](crate::validate::rules::MAX_DEPTH)).
const MAX_FAST_DEPTH: u32 = 16;
/// Most keys in one object the pass compares pairwise for repeats; more go to the full
/// path (which keeps them in a map), so hostile records cannot make the pass quadratic.
const MAX_FAST_KEYS: usize = 64;
/// Longest number the pass copies; longer ones (which may overflow) go to the full path.
const MAX_NUMBER_BYTES: usize = 40;
/// Size of the arena chunks records are usually copied into: one record kept (held back
/// for a busy profile, waiting for its fate) keeps its whole chunk, so not large. A longer
/// record gets a chunk of its own size (plus `WINDOW`); an array element that outgrows its
/// chunk gets one at least twice as large (see `Pass::grow`).
const ARENA_BYTES: usize = 16 * 1024;
/// A scratch chunk grown past this by a long record (a line may be megabytes) is given
/// back once the record is copied, rather than kept for the thread's lifetime.
const KEPT_SCRATCH_BYTES: usize = 1 << 20;
/// Runs of text between whitespace up to this long, with this many bytes of text after
/// their start, are copied as one fixed-size block (a few vector moves) rather than by a
/// call to `memcpy` for their exact length: the arena always has this much room past what
/// is written. Longer runs, and those near the end of the text, are copied exactly.
const WINDOW: usize = 32;

/// A span of a record's text: start and end. `u32` keeps an update small (the reader
/// declines longer texts; Mixpanel takes 1 MB per update).
pub(crate) type Span = (u32, u32);

/// An update read from JSON text: its object minified, and where its parts are. The text
/// is held (`Bytes`, in an [`Update`](crate::Update)) or borrowed (`&[u8]`, from the
/// source text itself or the reader's scratch, while a batcher copies it:
/// [`read_borrowed`]).
#[derive(Clone, PartialEq)]
pub(crate) struct TextRecord<J = Bytes> {
    /// The whole object, `{` to `}`, without whitespace between tokens.
    pub(crate) json: J,
    pub(crate) kind: OpKind,
    pub(crate) endpoint: Endpoint,
    /// Span of the id's JSON string, quotes included (`$distinct_id` or `$group_id`).
    pub(crate) id: Span,
    /// Span of `$group_key`'s JSON string, for `/groups`.
    pub(crate) key: Option<Span>,
    /// The `$token` member, if any.
    pub(crate) token: Option<TokenMember>,
    /// The operation's value.
    pub(crate) payload: Span,
    /// Each modifier's value, in the order of `rules::MODIFIERS`; `(0, 0)` when absent.
    pub(crate) modifiers: [Span; MODIFIERS.len()],
}

/// Where a record's `$token` is.
#[derive(Clone, Copy, PartialEq)]
pub(crate) struct TokenMember {
    /// The member with one adjacent comma (the one before it, or after it when it comes
    /// first): cut out, the rest is still a well-formed list of members.
    pub(crate) member: Span,
    /// The token's text between the quotes (it holds no escape).
    pub(crate) value: Span,
}

impl<J: AsRef<[u8]>> std::fmt::Debug for TextRecord<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text holds the token: show what identifies the record only.
        f.debug_struct("TextRecord")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("id", &String::from_utf8_lossy(self.span(self.id)))
            .finish_non_exhaustive()
    }
}

impl<J> TextRecord<J> {
    /// A record the pass fills in place (see [`Pass::record`]), its text `json` until
    /// the pass knows where the minified text is.
    fn blank(json: J) -> TextRecord<J> {
        TextRecord {
            json,
            kind: OpKind::Set,
            endpoint: Endpoint::Engage,
            id: (0, 0),
            key: None,
            token: None,
            payload: (0, 0),
            modifiers: [(0, 0); MODIFIERS.len()],
        }
    }
}

impl<J: AsRef<[u8]>> TextRecord<J> {
    /// The text of a span of `json`.
    pub(crate) fn span(&self, (a, b): Span) -> &[u8] {
        &self.json.as_ref()[a as usize..b as usize]
    }

    /// An id's string, quotes stripped (ids the pass takes hold no escape).
    pub(crate) fn id_text(&self, (a, b): Span) -> &str {
        std::str::from_utf8(self.span((a + 1, b - 1))).unwrap_or_default()
    }

    /// The value of modifier `name` (one of `rules::MODIFIERS`), if the record has it.
    pub(crate) fn modifier(&self, name: &str) -> Option<&[u8]> {
        let i = crate::validate::rules::MODIFIERS
            .iter()
            .position(|m| *m == name)?;
        let span = self.modifiers[i];
        (span.1 > 0).then(|| self.span(span))
    }

    /// The profile it updates.
    pub(crate) fn profile(&self) -> ProfileId {
        match self.key {
            Some(key) => ProfileId::Group {
                key: self.id_text(key).to_owned(),
                id: self.id_text(self.id).to_owned(),
            },
            None => ProfileId::User {
                distinct_id: self.id_text(self.id).to_owned(),
            },
        }
    }

    /// Its profile's hash ([`profile_hash`](crate::model::profile_hash)).
    pub(crate) fn profile_hash(&self) -> u64 {
        crate::model::profile_hash(
            self.endpoint,
            self.key.map_or(&[][..], |k| self.span(k)),
            self.span(self.id),
        )
    }
}

/// The parts of an update [`Update::from_json`](crate::Update::from_json) read in one
/// pass, borrowed from its minified text ([`Update::json_parts`](crate::Update::json_parts)).
/// The record is valid for [`endpoint`](Self::endpoint) by the rules of
/// [`check_record`](crate::validate::check_record) with
/// [`GroupOperations::Any`](crate::validate::GroupOperations::Any), and draws no warning.
///
/// A server (the emulator) takes what it needs from here without parsing the record again.
///
/// ```
/// use engage_core::model::{Endpoint, OpKind};
/// use engage_core::Update;
/// let update = Update::from_json(
///     r#"{"$token": "tok", "$distinct_id": "u1", "$add": {"n": 2}, "$time": 1700000000000}"#,
/// )?;
/// let parts = update.json_parts().expect("read in one pass");
/// assert_eq!(parts.endpoint(), Endpoint::Engage);
/// assert_eq!(parts.operation(), OpKind::Add);
/// assert_eq!(parts.token(), Some("tok"));
/// assert_eq!(parts.distinct_id(), Some("u1"));
/// assert_eq!(parts.payload(), br#"{"n":2}"#);
/// assert_eq!(parts.modifier("$time"), Some(&b"1700000000000"[..]));
/// assert_eq!(parts.modifier("$ip"), None);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct JsonParts<'a> {
    pub(crate) record: &'a TextRecord,
}

impl<'a> JsonParts<'a> {
    /// The endpoint its ids are for.
    pub fn endpoint(&self) -> Endpoint {
        self.record.endpoint
    }

    /// Its operation.
    pub fn operation(&self) -> OpKind {
        self.record.kind
    }

    /// Its own `$token`, if it has one (never blank; never holding an escape).
    pub fn token(&self) -> Option<&'a str> {
        let t = self.record.token?;
        std::str::from_utf8(self.record.span(t.value)).ok()
    }

    /// `$distinct_id`, for `/engage` (never empty; never holding an escape).
    pub fn distinct_id(&self) -> Option<&'a str> {
        match self.record.key {
            None => Some(self.record.id_text(self.record.id)),
            Some(_) => None,
        }
    }

    /// `$group_key` and `$group_id`, for `/groups` (never empty; never holding an escape).
    pub fn group(&self) -> Option<(&'a str, &'a str)> {
        let key = self.record.key?;
        Some((
            self.record.id_text(key),
            self.record.id_text(self.record.id),
        ))
    }

    /// The operation's value as minified JSON.
    pub fn payload(&self) -> &'a [u8] {
        self.record.span(self.record.payload)
    }

    /// The JSON value of modifier `name` (`$ip`, `$time`, …), if the record has it.
    pub fn modifier(&self, name: &str) -> Option<&'a [u8]> {
        self.record.modifier(name)
    }

    /// The whole object as minified JSON, its own `$token` included.
    pub fn json(&self) -> &'a [u8] {
        &self.record.json
    }
}

impl std::fmt::Debug for JsonParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.record.fmt(f)
    }
}

/// The pass gave up: the full path decides.
struct Decline;

type Step<T = ()> = Result<T, Decline>;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        arena: BytesMut::new(),
        keys: Vec::new(),
    });
}

/// Per-thread buffers: the arena records are written into (split off as [`Bytes`] that
/// share a chunk; its bytes are all initialized, zeroed when it is made, so a record is
/// written by index without length bookkeeping), and the stack of keys seen in the
/// objects being read.
struct Scratch {
    arena: BytesMut,
    keys: Vec<(usize, usize)>,
}

/// Reads `text` as an update object; `None` when the full path must decide. The bytes
/// need not have been checked to be UTF-8: the pass checks the strings that are not
/// ASCII (JSON has no other place for such bytes) and declines invalid ones.
#[inline]
pub(crate) fn read(text: &[u8]) -> Option<TextRecord> {
    read_at(text, 0, true).map(|(record, _)| record)
}

/// Reads `text` as [`read`] does and hands the record to `f` borrowed: nothing is kept, so
/// nothing is shared or counted (the way to copy a record straight into a body). Text
/// without whitespace between its tokens (as exports and serializers write it) is handed
/// over where it lies; other text is minified into the thread's scratch first. `None`
/// when the full path must decide (also if `f` itself reads text this way while the
/// scratch is in use).
#[inline]
pub(crate) fn read_borrowed<R>(text: &[u8], f: impl FnOnce(&TextRecord<&[u8]>) -> R) -> Option<R> {
    SCRATCH.with(|scratch| {
        // In use (`f` reading text after all): declined, the full path decides; no panic.
        let mut scratch = scratch.try_borrow_mut().ok()?;
        let Scratch { arena, keys } = &mut *scratch;
        let mut record = TextRecord::blank(&[][..]);
        let (_, minified) = pass_at(text, 0, true, true, arena, keys, &mut record)?;
        record.json = match minified {
            Minified::InPlace(from, to) => &text[from..to],
            Minified::Written(len) => &arena[..len],
        };
        let out = f(&record);
        if arena.len() > KEPT_SCRATCH_BYTES {
            *arena = BytesMut::new();
        }
        Some(out)
    })
}

/// Reads the update object at `text[start..]`: to the end of `text` if `whole`, else to
/// its closing brace. Returns it and where it ended.
fn read_at(text: &[u8], start: usize, whole: bool) -> Option<(TextRecord, usize)> {
    SCRATCH.with(|scratch| {
        let Scratch { arena, keys } = &mut *scratch.borrow_mut();
        let mut record = TextRecord::blank(Bytes::new());
        let (end, minified) = pass_at(text, start, whole, false, arena, keys, &mut record)?;
        let Minified::Written(len) = minified else {
            unreachable!("only a borrowing pass leaves text in place")
        };
        record.json = arena.split_to(len).freeze();
        Some((record, end))
    })
}

/// Where a pass left the minified text of a record.
enum Minified {
    /// In the source, `text[from..to]`: it had no whitespace to take out.
    InPlace(usize, usize),
    /// In the front of the arena, this many bytes.
    Written(usize),
}

/// The pass over the update object at `text[start..]` (to the end of `text` if `whole`,
/// else to its closing brace), written to the front of `arena` (or, if `in_place` and
/// there is no whitespace to take out, left where it is). Fills `record` but for its
/// text; returns where the record ended in `text`, and where its minified text is.
#[inline]
fn pass_at<J>(
    text: &[u8],
    start: usize,
    whole: bool,
    in_place: bool,
    arena: &mut BytesMut,
    keys: &mut Vec<(usize, usize)>,
    record: &mut TextRecord<J>,
) -> Option<(usize, Minified)> {
    // Positions in the whole text, not only in this record, are kept as `u32`
    // (`Pass::id_string`): a longer text goes to the full path.
    if u32::try_from(text.len()).is_err() {
        return None;
    }
    let len = text.len() - start;
    // A record in an array is seldom longer than this; a longer one grows the arena as
    // it is written. The window: runs are copied in fixed-size blocks (see `flush`).
    let room = if whole { len } else { len.min(4096) } + WINDOW;
    if arena.len() < room {
        // Earlier records share the old chunk; it is freed when the last one goes.
        *arena = BytesMut::zeroed(ARENA_BYTES.max(room));
    }
    keys.clear();
    let mut pass = Pass {
        src: text,
        pos: start,
        copied: start,
        out: arena,
        written: 0,
        keys,
    };
    // A declined record leaves what it wrote in the arena, to be overwritten.
    pass.record(record).ok()?;
    let end = pass.pos;
    if whole
        && !text[end..]
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return None;
    }
    // Nothing written yet: no whitespace inside, so the text from the last whitespace
    // skipped (leading, if any) is the minified record, its spans counted from there.
    if in_place && pass.written == 0 {
        return Some((end, Minified::InPlace(pass.copied, end)));
    }
    pass.flush();
    Some((end, Minified::Written(pass.written)))
}

/// One element of a JSON array read by [`read_array`]: an update object the one-pass
/// reader took, or the element's text for the full parser.
pub(crate) type ArrayItem<'a> = Result<TextRecord, &'a str>;

/// Splits a JSON array (a request body) into its elements, reading each update object in
/// one pass and leaving the text of any other element to the full parser. `None` when
/// `src` is not a well-formed JSON array (the full parser names the problem then), or not
/// UTF-8: the pass checks the strings of the objects it reads, the full parser the
/// elements it is left, and nothing else may be other than ASCII.
pub(crate) fn read_array(src: &[u8]) -> Option<Vec<ArrayItem<'_>>> {
    let ws = |mut at: usize| {
        while matches!(src.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    };
    let mut at = ws(0);
    if src.get(at) != Some(&b'[') {
        return None;
    }
    at = ws(at + 1);
    // Room for the elements of a typical body at once (they are large, and growing by
    // doubling copied them all several times): one per 64 bytes, within a request's 2000.
    let mut items = Vec::with_capacity((src.len() / 64).clamp(1, 2048));
    if src.get(at) == Some(&b']') {
        return (ws(at + 1) == src.len()).then_some(items);
    }
    loop {
        let read = if src.get(at) == Some(&b'{') {
            read_at(src, at, false)
        } else {
            None
        };
        match read {
            Some((record, end)) => {
                items.push(Ok(record));
                at = end;
            }
            None => {
                // The full parser finds where the element ends, and checks its syntax (and
                // that it is UTF-8) as it would in the whole array.
                let mut de = serde_json::Deserializer::from_slice(&src[at..]);
                let raw: &serde_json::value::RawValue =
                    serde::Deserialize::deserialize(&mut de).ok()?;
                items.push(Err(raw.get()));
                at += raw.get().len();
            }
        }
        at = ws(at);
        match src.get(at) {
            Some(b',') => at = ws(at + 1),
            Some(b']') => break,
            _ => return None,
        }
    }
    (ws(at + 1) == src.len()).then_some(items)
}

/// Keys of the top level, each a bit: a key seen twice goes to the full path.
mod seen {
    pub(super) const TOKEN: u16 = 1;
    pub(super) const DISTINCT_ID: u16 = 1 << 1;
    pub(super) const GROUP_KEY: u16 = 1 << 2;
    pub(super) const GROUP_ID: u16 = 1 << 3;
    pub(super) const OPERATION: u16 = 1 << 4;
    /// The modifiers, from this bit on, in the order of `rules::MODIFIERS`.
    pub(super) const MODIFIER: u16 = 1 << 5;
}

/// The top-level keys of an update object that name its profile or token.
#[derive(Clone, Copy)]
enum IdKey {
    Token,
    DistinctId,
    GroupKey,
    GroupId,
}

/// Which [`IdKey`] `key` is, if any. Compared as whole slices (a length, then wide
/// loads), not as a `match` on byte-string patterns, which compares byte by byte.
#[inline(always)]
fn id_key(key: &[u8]) -> Option<IdKey> {
    if key == b"$token" {
        Some(IdKey::Token)
    } else if key == b"$distinct_id" {
        Some(IdKey::DistinctId)
    } else if key == b"$group_key" {
        Some(IdKey::GroupKey)
    } else if key == b"$group_id" {
        Some(IdKey::GroupId)
    } else {
        None
    }
}

/// What a value must be.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    /// Anything (`$delete`'s value).
    Any,
    /// Anything, strings at most 255 bytes, nesting limited (a property's value).
    Checked,
    /// A number.
    Number,
    /// A string or a number (a `$union` item), strings at most 255 bytes.
    UnionItem,
}

/// One pass over `src`, copying to `out` all but whitespace between tokens. Outside
/// strings it takes ASCII only; strings holding other bytes are checked to be UTF-8: so
/// what it takes is UTF-8 text, whether or not `src` was checked before.
struct Pass<'a> {
    src: &'a [u8],
    pos: usize,
    /// `src[..copied]` is in `out[..written]` (less the whitespace skipped).
    copied: usize,
    /// The arena: every byte initialized, at least `WINDOW` bytes of room past what the
    /// record needs (grown by `grow` otherwise).
    out: &'a mut BytesMut,
    written: usize,
    keys: &'a mut Vec<(usize, usize)>,
}

impl<'a> Pass<'a> {
    /// Where `src[at]` lands in `out` (`at` past the last whitespace skipped).
    fn out_pos(&self, at: usize) -> usize {
        self.written + (at - self.copied)
    }

    /// Copies what was read since the last whitespace to `out`. Inlined always: spaced
    /// text (`json.dumps`'s `", "` and `": "`) calls it twice per member, and the call cost
    /// ~5% of a dry run of such a file.
    #[inline(always)]
    fn flush(&mut self) {
        let (from, to) = (self.copied, self.written);
        let n = self.pos - from;
        if to + n + WINDOW > self.out.len() {
            self.grow(to + n + WINDOW);
        }
        let block = self
            .src
            .get(from..)
            .and_then(|rest| rest.first_chunk::<WINDOW>());
        match (block, self.out[to..].first_chunk_mut::<WINDOW>()) {
            // Bytes past the run are written too, and overwritten by what follows.
            (Some(block), Some(window)) if n <= WINDOW => *window = *block,
            _ => self.out[to..to + n].copy_from_slice(&self.src[from..self.pos]),
        }
        self.written = to + n;
        self.copied = self.pos;
    }

    /// A record longer than the room left in its chunk (only an array element can be: it
    /// is given at least 4 KiB, up to what the chunk has left, since its end is not known
    /// yet): a new chunk, at least twice as large, holding what is written so far. The
    /// chunk's remainder serves the records that follow, as any chunk's does.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, needed: usize) {
        let mut bigger = BytesMut::zeroed(needed.max(2 * self.out.len()).max(ARENA_BYTES));
        bigger[..self.written].copy_from_slice(&self.out[..self.written]);
        *self.out = bigger;
    }

    fn peek(&self) -> Step<u8> {
        self.src.get(self.pos).copied().ok_or(Decline)
    }

    /// Skips whitespace (copying what came before it). Called between every two tokens,
    /// mostly to find none: inlined always (out of line, its call cost more than it).
    #[inline(always)]
    fn ws(&mut self) {
        if matches!(self.src.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.flush();
            while matches!(self.src.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
            self.copied = self.pos;
        }
    }

    fn expect(&mut self, byte: u8) -> Step {
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(Decline)
        }
    }

    /// Reads the record, filling `out` (but for its text) in place: returned, the record
    /// (~100 bytes) went through memory and its first copy stalled on the stores that had
    /// just written it (`perf`: ~4% of the `ingest` benchmark's time).
    fn record<J>(&mut self, out: &mut TextRecord<J>) -> Step {
        self.ws();
        self.expect(b'{')?;
        let mut seen = 0u16;
        let mut kind = None;
        let mut first = true;
        let (mut distinct, mut group_key, mut group_id, mut token) = (None, None, None, None);
        let mut payload = (0, 0);
        let mut modifiers = [(0, 0); MODIFIERS.len()];
        loop {
            self.ws();
            let key_at = self.out_pos(self.pos);
            let key_start = self.pos;
            if self.string()? {
                return Err(Decline);
            }
            // Compared as bytes: the keys looked for are ASCII.
            let key = &self.src[key_start + 1..self.pos - 1];
            self.ws();
            self.expect(b':')?;
            self.ws();
            let bit = match id_key(key) {
                Some(IdKey::Token) => {
                    let (a, b) = self.id_string()?;
                    let (a, b) = (a as usize, b as usize);
                    let value = &self.src[a + 1..b - 1];
                    // Blank as `str::trim` has it (Unicode spaces too), as the full path.
                    let blank = match value.is_ascii() {
                        true => value.trim_ascii().is_empty(),
                        false => std::str::from_utf8(value).map_or(true, |v| v.trim().is_empty()),
                    };
                    if blank {
                        return Err(Decline);
                    }
                    let value_at = self.out_pos(a) + 1;
                    token = Some((key_at, value_at, value_at + value.len(), first));
                    seen::TOKEN
                }
                Some(IdKey::DistinctId) => {
                    distinct = Some(self.id_span()?);
                    seen::DISTINCT_ID
                }
                Some(IdKey::GroupKey) => {
                    group_key = Some(self.id_span()?);
                    seen::GROUP_KEY
                }
                Some(IdKey::GroupId) => {
                    group_id = Some(self.id_span()?);
                    seen::GROUP_ID
                }
                None => {
                    let start = self.out_pos(self.pos);
                    if let Some(op) = OpKind::from_key_bytes(key) {
                        self.payload(op)?;
                        kind = Some(op);
                        payload = (start, self.out_pos(self.pos));
                        seen::OPERATION
                    } else {
                        let i = MODIFIERS
                            .iter()
                            .position(|m| m.as_bytes() == key)
                            .ok_or(Decline)?;
                        self.modifier(MODIFIERS[i])?;
                        modifiers[i] = (start, self.out_pos(self.pos));
                        seen::MODIFIER << i
                    }
                }
            };
            if seen & bit != 0 {
                return Err(Decline);
            }
            seen |= bit;
            first = false;
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(Decline),
            }
        }
        let kind = kind.ok_or(Decline)?;
        let (endpoint, id, key) = match (distinct, group_key, group_id) {
            (Some(d), None, None) => (Endpoint::Engage, d, None),
            (None, Some(k), Some(i)) => (Endpoint::Groups, i, Some(k)),
            _ => return Err(Decline),
        };
        // Out positions are final once the last whitespace is flushed: nothing before
        // them moves. The member's comma is next to it in the minified text. They fit a
        // u32: the text does.
        let span = |(a, b): (usize, usize)| (a as u32, b as u32);
        let token = token.map(|(key_at, a, b, first)| TokenMember {
            member: span(if first {
                (key_at, b + 2)
            } else {
                (key_at - 1, b + 1)
            }),
            value: span((a, b)),
        });
        out.kind = kind;
        out.endpoint = endpoint;
        out.id = id;
        out.key = key;
        out.token = token;
        out.payload = span(payload);
        out.modifiers = modifiers.map(span);
        Ok(())
    }

    /// An id: a non-empty string without escapes (so its text is the canonical JSON
    /// string profiles are told apart by). Returns its span in `out`, quotes included.
    fn id_span(&mut self) -> Step<Span> {
        let (a, b) = self.id_string()?;
        if b - a <= 2 {
            return Err(Decline);
        }
        // `out` is no longer than the text read: it fits a `u32` as the whole text does.
        let at = self.out_pos(a as usize) as u32;
        Ok((at, at + (b - a)))
    }

    /// A string without escapes; its span in `src`, quotes included. A [`Span`] (the whole
    /// text fits a `u32`: `pass_at` declines longer ones), so the answer comes back in
    /// registers: as a pair of `usize` it went through memory, and the caller's reading it
    /// back stalled on the two stores.
    fn id_string(&mut self) -> Step<Span> {
        let start = self.pos;
        if self.string()? {
            return Err(Decline);
        }
        Ok((start as u32, self.pos as u32))
    }

    fn modifier(&mut self, key: &str) -> Step {
        match modifier_type(key) {
            Some("a string") => self.string().map(drop),
            Some("a number") => self.number(),
            Some("a boolean") => match self.peek()? {
                b't' => self.literal(b"true"),
                b'f' => self.literal(b"false"),
                _ => Err(Decline),
            },
            _ => Err(Decline),
        }
    }

    fn payload(&mut self, op: OpKind) -> Step {
        match op {
            OpKind::Delete => self.value(Want::Any, 0),
            OpKind::Unset => self.elements(false, Self::short_string),
            OpKind::Add => self.members(|p| p.value(Want::Number, 0)),
            OpKind::Union => self.members(|p| p.list(Want::UnionItem, 0, false)),
            _ => self.members(|p| p.value(Want::Checked, 0)),
        }
    }

    /// An object: its keys checked by [`key`](Self::key), each value read by `value`.
    fn members(&mut self, mut value: impl FnMut(&mut Self) -> Step) -> Step {
        self.expect(b'{')?;
        let base = self.keys.len();
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.key(base)?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            value(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    self.keys.truncate(base);
                    return Ok(());
                }
                _ => return Err(Decline),
            }
        }
    }

    /// A list, each element read by `element`; an empty one only if `may_be_empty`.
    fn elements(&mut self, may_be_empty: bool, mut element: impl FnMut(&mut Self) -> Step) -> Step {
        self.expect(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            if !may_be_empty {
                return Err(Decline);
            }
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            element(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Decline),
            }
        }
    }

    /// A key of an object whose keys start at `keys[base]`: no escape (so equal keys
    /// have equal text), at most 255 bytes (Mixpanel's name limit, in characters, is never
    /// passed then), not seen before in the object.
    fn key(&mut self, base: usize) -> Step {
        let start = self.pos;
        let escaped = self.string()?;
        let end = self.pos;
        if escaped || end - start - 2 > MAX_STRING_BYTES || self.keys.len() - base >= MAX_FAST_KEYS
        {
            return Err(Decline);
        }
        let text = &self.src[start..end];
        // Lengths, then the last character, tell most keys apart before a comparison.
        let last = self.src[end - 2];
        if self.keys[base..].iter().any(|&(a, b)| {
            b - a == text.len() && self.src[b - 2] == last && &self.src[a..b] == text
        }) {
            return Err(Decline);
        }
        self.keys.push((start, end));
        Ok(())
    }

    /// A value at `depth` inside a property's value (0: the value itself).
    fn value(&mut self, want: Want, depth: u32) -> Step {
        match (self.peek()?, want) {
            (b'"', Want::Any) => self.string().map(drop),
            (b'"', Want::Checked | Want::UnionItem) => self.short_string(),
            (b'-' | b'0'..=b'9', _) => self.number(),
            (_, Want::Number | Want::UnionItem) => Err(Decline),
            (b'{', _) => self.object(want, depth),
            (b'[', _) => self.list(want, depth, true),
            (b't', _) => self.literal(b"true"),
            (b'f', _) => self.literal(b"false"),
            (b'n', _) => self.literal(b"null"),
            _ => Err(Decline),
        }
    }

    /// A list; an empty one only if `may_be_empty` (not a `$union`'s).
    fn list(&mut self, want: Want, depth: u32, may_be_empty: bool) -> Step {
        if depth >= MAX_FAST_DEPTH {
            return Err(Decline);
        }
        self.elements(may_be_empty, |p| p.value(want, depth + 1))
    }

    fn object(&mut self, want: Want, depth: u32) -> Step {
        if depth >= MAX_FAST_DEPTH {
            return Err(Decline);
        }
        self.members(|p| p.value(want, depth + 1))
    }

    fn literal(&mut self, word: &[u8]) -> Step {
        if self.src[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Decline)
        }
    }

    /// A number in the forms that need no conversion to judge: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`.
    fn number(&mut self) -> Step {
        let start = self.pos;
        let digits = |s: &Self, mut at: usize| {
            while s.src.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            at
        };
        let mut at = start;
        if self.src.get(at) == Some(&b'-') {
            at += 1;
        }
        match self.src.get(at) {
            Some(b'0') => at += 1,
            Some(b'1'..=b'9') => at = digits(self, at + 1),
            _ => return Err(Decline),
        }
        if self.src.get(at) == Some(&b'.') {
            let end = digits(self, at + 1);
            if end == at + 1 {
                return Err(Decline);
            }
            at = end;
        }
        if matches!(self.src.get(at), Some(b'e' | b'E' | b'0'..=b'9'))
            || at - start > MAX_NUMBER_BYTES
        {
            return Err(Decline);
        }
        self.pos = at;
        Ok(())
    }

    /// A string Mixpanel keeps whole: at most 255 bytes as written (so as decoded).
    fn short_string(&mut self) -> Step {
        let start = self.pos;
        self.string()?;
        if self.pos - start - 2 > MAX_STRING_BYTES {
            return Err(Decline);
        }
        Ok(())
    }

    /// A JSON string; returns whether it holds an escape. Checks every escape (a surrogate
    /// must come in a pair) and refuses control characters, as the JSON grammar does, and
    /// bytes that are not UTF-8. Inlined: it is the pass's inner loop.
    #[inline(always)]
    fn string(&mut self) -> Step<bool> {
        if self.peek()? != b'"' {
            return Err(Decline);
        }
        let mut at = self.pos + 1;
        let mut escaped = false;
        // Where the first byte that is not ASCII is: the string is checked to be UTF-8
        // from there to its end, in one go. Until one is found, the scan stops at such a
        // byte too (its high bit).
        let mut wide_from = None;
        let mut high = 0x8080_8080_8080_8080u64;
        loop {
            // Eight bytes at a time to the next quote, backslash or control byte.
            while let Some(word) = self.src.get(at..at + 8) {
                let word = u64::from_le_bytes(word.try_into().map_err(|_| Decline)?);
                let mask = escape_mask(word) | (word & high);
                if mask != 0 {
                    at += (mask.trailing_zeros() / 8) as usize;
                    break;
                }
                at += 8;
            }
            match self.src.get(at).copied().ok_or(Decline)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    at = self.escape(at + 1)?;
                }
                0..0x20 => return Err(Decline),
                0x80.. if wide_from.is_none() => {
                    wide_from = Some(at);
                    high = 0;
                    at += 1;
                }
                _ => at += 1,
            }
        }
        if let Some(from) = wide_from
            && std::str::from_utf8(&self.src[from..at]).is_err()
        {
            return Err(Decline);
        }
        self.pos = at + 1;
        Ok(escaped)
    }

    /// The escape whose letter is at `at`; returns where the string goes on. Out of line:
    /// most strings have none, and the string loop stays small without it.
    #[inline(never)]
    fn escape(&self, at: usize) -> Step<usize> {
        match self.src.get(at).copied().ok_or(Decline)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(at + 1),
            b'u' => {
                let unit = self.hex4(at + 1)?;
                match unit {
                    0xD800..=0xDBFF => {
                        // A leading surrogate: a trailing one must follow.
                        if self.src.get(at + 5..at + 7) != Some(b"\\u") {
                            return Err(Decline);
                        }
                        match self.hex4(at + 7)? {
                            0xDC00..=0xDFFF => Ok(at + 11),
                            _ => Err(Decline),
                        }
                    }
                    0xDC00..=0xDFFF => Err(Decline),
                    _ => Ok(at + 5),
                }
            }
            _ => Err(Decline),
        }
    }

    fn hex4(&self, at: usize) -> Step<u32> {
        let digits = self.src.get(at..at + 4).ok_or(Decline)?;
        let mut unit = 0;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or(Decline)?;
            unit = unit * 16 + v;
        }
        Ok(unit)
    }
}
