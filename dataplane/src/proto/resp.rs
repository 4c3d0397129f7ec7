//! RESP, the Redis serialization protocol: a request parser that reads
//! commands in place, a reply encoder for RESP2 and RESP3, and a reply
//! parser for clients.
//!
//! **Requests.** A client sends a command as an array of bulk strings
//! (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or, typed by hand, as an *inline*
//! line of words (`GET k\r\n`). [`RequestParser::parse`] takes every byte
//! received and not yet consumed (the transport keeps them in one slice)
//! and finds the first whole command: its arguments are ranges of that
//! slice, nothing is copied, and the parser's argument table is reused
//! from command to command, so a steady stream of requests allocates
//! nothing. An incomplete command returns `None` and remembers how many
//! bytes it needs before it is worth looking again, so a large value
//! arriving in many pieces is scanned once, not once per piece.
//!
//! The protocol errors are Redis's own (`-ERR Protocol error: invalid bulk
//! length`, ...): a server sends [`ProtocolError`]'s text as an error
//! reply and closes the connection, as Redis does. [`Limits`] bounds the
//! bulk length, the argument count and the inline line; a peer cannot make
//! the parser allocate more than `max_args` ranges.
//!
//! **Replies.** [`Writer`] appends replies to a `Vec<u8>` (a connection's
//! pending output) in the version the connection negotiated with `HELLO`:
//! RESP3's null, map, set, double and boolean types become their RESP2
//! equivalents on a RESP2 connection, as Redis encodes them.
//!
//! **Reply parsing.** [`parse_value`] reads one reply of either version
//! into a borrowed [`Value`] with a nesting limit; [`value_len`] measures
//! one without building it.

use std::fmt;
use std::ops::Range;

/// Bounds on what a peer may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string (Redis's `proto-max-bulk-len`; 512 MiB
    /// there, 1 MiB here by default: a command must fit the connection's
    /// receive buffer, which the server sizes from this).
    pub max_bulk: usize,
    /// The most arguments in one command (1,048,576).
    pub max_args: usize,
    /// The longest inline command line, and the longest `*`/`$` header
    /// line (64 KiB, as Redis).
    pub max_inline: usize,
    /// The deepest nesting [`parse_value`] follows (32).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk: 1 << 20,
            max_args: 1 << 20,
            max_inline: 64 * 1024,
            max_depth: 32,
        }
    }
}

/// Input that breaks the protocol or a [`Limits`] bound. Its `Display`
/// is the text Redis sends (without the `-` and the line end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// A `*` count that is not a number or is out of range.
    MultibulkLength,
    /// A `$` length that is not a number, negative, or over `max_bulk`.
    BulkLength,
    /// An array element that is not a bulk string; the byte found.
    ExpectedBulk(u8),
    /// A bulk string not followed by `\r\n`.
    ExpectedCrlf,
    /// An inline line longer than `max_inline`.
    InlineTooBig,
    /// A `*` header line longer than `max_inline`.
    MultibulkCountTooBig,
    /// A `$` header line longer than `max_inline`.
    BulkCountTooBig,
    /// More arguments than `max_args`.
    TooManyArgs,
    /// A reply nested deeper than `max_depth`.
    TooDeep,
    /// A reply of an unknown type; the byte.
    UnknownType(u8),
    /// A reply's number that does not parse.
    BadNumber,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ERR Protocol error: ")?;
        match self {
            Self::MultibulkLength => f.write_str("invalid multibulk length"),
            Self::BulkLength => f.write_str("invalid bulk length"),
            Self::ExpectedBulk(b) => write!(f, "expected '$', got '{}'", char::from(*b)),
            Self::ExpectedCrlf => f.write_str("expected '\\r\\n' after bulk data"),
            Self::InlineTooBig => f.write_str("too big inline request"),
            Self::MultibulkCountTooBig => f.write_str("too big mbulk count string"),
            Self::BulkCountTooBig => f.write_str("too big bulk count string"),
            Self::TooManyArgs => f.write_str("too many arguments"),
            Self::TooDeep => f.write_str("reply nested too deep"),
            Self::UnknownType(b) => write!(f, "unknown reply type '{}'", char::from(*b)),
            Self::BadNumber => f.write_str("invalid number"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Reads commands in place; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    args: Vec<Range<usize>>,
    /// Bytes the input must reach before the pending command can be whole.
    need: usize,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// Finds `\r\n` in `buf` from `from`; the index of the `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(i) = memchr::memchr(b'\r', buf.get(at..)?) {
        let r = at + i;
        if buf.get(r + 1) == Some(&b'\n') {
            return Some(r);
        }
        at = r + 1;
    }
    None
}

/// A decimal integer as Redis's `string2ll` accepts it: an optional `-`,
/// digits, no leading `+`, spaces or (except `0` itself) leading zeros.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = if neg {
            v.checked_mul(10)?.checked_sub(d)?
        } else {
            v.checked_mul(10)?.checked_add(d)?
        };
    }
    Some(v)
}

impl RequestParser {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            args: Vec::new(),
            need: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Finds the first whole command in `buf`. Returns `Ok(Some(n))` when
    /// its `n` bytes are whole (its arguments are then [`Self::args`] of
    /// the same `buf`; an empty command, such as a blank inline line or
    /// `*0`, has none and should be skipped), `Ok(None)` when more bytes
    /// are needed (call again with the same bytes and more).
    ///
    /// # Errors
    ///
    /// [`ProtocolError`] for input no more bytes can mend; the connection
    /// should get its text as an error reply and be closed.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        self.args.clear();
        if buf.len() < self.need {
            return Ok(None);
        }
        self.need = 0;
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let r = if first == b'*' {
            self.multibulk(buf)
        } else {
            self.inline(buf)
        };
        if !matches!(r, Ok(Some(_))) {
            self.args.clear();
        }
        r
    }

    fn inline(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > self.limits.max_inline {
                return Err(ProtocolError::InlineTooBig);
            }
            self.need = buf.len() + 1;
            return Ok(None);
        };
        if nl > self.limits.max_inline {
            return Err(ProtocolError::InlineTooBig);
        }
        // Redis accepts a bare `\n` as the end of an inline line.
        let end = if nl > 0 && buf[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let mut i = 0;
        while i < end {
            while i < end && matches!(buf[i], b' ' | b'\t') {
                i += 1;
            }
            let start = i;
            while i < end && !matches!(buf[i], b' ' | b'\t') {
                i += 1;
            }
            if i > start {
                if self.args.len() == self.limits.max_args {
                    return Err(ProtocolError::TooManyArgs);
                }
                self.args.push(start..i);
            }
        }
        Ok(Some(nl + 1))
    }

    /// Reads a `*`/`$` header's number at `at` (just after the type byte).
    fn header(
        &self,
        buf: &[u8],
        at: usize,
        too_big: ProtocolError,
    ) -> Result<Option<(i64, usize)>, ProtocolError> {
        let Some(cr) = find_crlf(buf, at) else {
            if buf.len() - at > self.limits.max_inline {
                return Err(too_big);
            }
            return Ok(None);
        };
        if cr - at > self.limits.max_inline {
            return Err(too_big);
        }
        Ok(parse_i64(&buf[at..cr])
            .map(|n| (n, cr + 2))
            .or(Some((i64::MIN, cr + 2))))
    }

    fn multibulk(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let Some((count, mut at)) = self.header(buf, 1, ProtocolError::MultibulkCountTooBig)?
        else {
            self.need = buf.len() + 1;
            return Ok(None);
        };
        if count == i64::MIN || count > i64::from(i32::MAX) {
            return Err(ProtocolError::MultibulkLength);
        }
        if count <= 0 {
            return Ok(Some(at));
        }
        let count = count as usize;
        if count > self.limits.max_args {
            return Err(ProtocolError::TooManyArgs);
        }
        for _ in 0..count {
            let Some(&t) = buf.get(at) else {
                self.need = at + 1;
                return Ok(None);
            };
            if t != b'$' {
                return Err(ProtocolError::ExpectedBulk(t));
            }
            let Some((len, data)) = self.header(buf, at + 1, ProtocolError::BulkCountTooBig)?
            else {
                self.need = buf.len() + 1;
                return Ok(None);
            };
            if len < 0 || len as u64 > self.limits.max_bulk as u64 {
                return Err(ProtocolError::BulkLength);
            }
            let end = data + len as usize;
            if buf.len() < end + 2 {
                self.need = end + 2;
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::ExpectedCrlf);
            }
            self.args.push(data..end);
            at = end + 2;
        }
        Ok(Some(at))
    }

    /// The arguments of the command the last [`Self::parse`] found, as
    /// ranges of the `buf` it was given.
    pub fn args(&self) -> &[Range<usize>] {
        &self.args
    }

    /// Argument `i` of that command in `buf`.
    pub fn arg<'a>(&self, buf: &'a [u8], i: usize) -> Option<&'a [u8]> {
        self.args.get(i).and_then(|r| buf.get(r.clone()))
    }
}

/// The protocol a connection speaks (`HELLO 2` or `HELLO 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// RESP2, every connection's start.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

/// Appends replies to a buffer; see the [module docs](self).
#[derive(Debug)]
pub struct Writer<'a> {
    /// Where the replies go.
    pub out: &'a mut Vec<u8>,
    /// The version they are encoded in.
    pub version: Version,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>, version: Version) -> Self {
        Self { out, version }
    }

    fn line(&mut self, tag: u8, body: &[u8]) {
        self.out.push(tag);
        self.out.extend_from_slice(body);
        self.out.extend_from_slice(b"\r\n");
    }

    fn number(&mut self, tag: u8, n: i64) {
        let mut b = itoa::Buffer::new();
        self.line(tag, b.format(n).as_bytes());
    }

    /// `+OK`-style status; `s` must not hold `\r` or `\n`.
    pub fn simple(&mut self, s: &[u8]) {
        self.line(b'+', s);
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.out.extend_from_slice(b"+OK\r\n");
    }

    /// An error reply; `s` (such as `ERR unknown command`) must not hold
    /// `\r` or `\n` (they are replaced by spaces, as Redis does).
    pub fn error(&mut self, s: &str) {
        self.out.push(b'-');
        self.out.extend(
            s.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.out.extend_from_slice(b"\r\n");
    }

    /// `:n`.
    pub fn integer(&mut self, n: i64) {
        self.number(b':', n);
    }

    /// A bulk string.
    pub fn bulk(&mut self, b: &[u8]) {
        self.number(b'$', b.len() as i64);
        self.out.extend_from_slice(b);
        self.out.extend_from_slice(b"\r\n");
    }

    /// A bulk string, or null for `None`.
    pub fn opt_bulk(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    /// Null: `_` in RESP3, the null bulk string `$-1` in RESP2.
    pub fn null(&mut self) {
        self.out.extend_from_slice(match self.version {
            Version::Resp3 => b"_\r\n",
            Version::Resp2 => b"$-1\r\n",
        });
    }

    /// A null array (`*-1` in RESP2, `_` in RESP3): what a blocking or
    /// conditional command answers for "nothing".
    pub fn null_array(&mut self) {
        self.out.extend_from_slice(match self.version {
            Version::Resp3 => b"_\r\n",
            Version::Resp2 => b"*-1\r\n",
        });
    }

    /// An array header of `n` elements; the elements follow.
    pub fn array(&mut self, n: usize) {
        self.number(b'*', n as i64);
    }

    /// A map header of `n` pairs (RESP2: an array of `2n` elements).
    pub fn map(&mut self, n: usize) {
        match self.version {
            Version::Resp3 => self.number(b'%', n as i64),
            Version::Resp2 => self.number(b'*', 2 * n as i64),
        }
    }

    /// A set header of `n` elements (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        match self.version {
            Version::Resp3 => self.number(b'~', n as i64),
            Version::Resp2 => self.number(b'*', n as i64),
        }
    }

    /// A verbatim text (RESP3 `=`, format `txt`; RESP2: a bulk string).
    pub fn verbatim(&mut self, text: &[u8]) {
        match self.version {
            Version::Resp3 => {
                self.number(b'=', text.len() as i64 + 4);
                self.out.extend_from_slice(b"txt:");
                self.out.extend_from_slice(text);
                self.out.extend_from_slice(b"\r\n");
            }
            Version::Resp2 => self.bulk(text),
        }
    }
}

/// One reply, borrowed from the bytes it was read from.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `+...`
    Simple(&'a [u8]),
    /// `-...`
    Error(&'a [u8]),
    /// `:n`
    Integer(i64),
    /// `$n` (RESP3 `=n` verbatim text too, its `fmt:` prefix kept).
    Bulk(&'a [u8]),
    /// `$-1`, `*-1` or RESP3 `_`.
    Null,
    /// `*n`; RESP3 `~n` (set) and `>n` (push) too.
    Array(Vec<Value<'a>>),
    /// RESP3 `%n`.
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// RESP3 `#t`/`#f`.
    Boolean(bool),
    /// RESP3 `,` and `(` (double and big number), as text.
    Number(&'a [u8]),
}

/// Reads one reply from the start of `buf`: `Ok(Some((value, n)))` when
/// its `n` bytes are whole, `Ok(None)` when more are needed.
///
/// # Errors
///
/// [`ProtocolError`] for bytes that are no reply, nesting past
/// `limits.max_depth` or a length past `limits.max_bulk`/`max_args`.
pub fn parse_value<'a>(
    buf: &'a [u8],
    limits: &Limits,
) -> Result<Option<(Value<'a>, usize)>, ProtocolError> {
    value_at(buf, 0, limits, 0)
}

/// The length of the one reply at the start of `buf` (`None`: not whole
/// yet), without building it.
///
/// # Errors
///
/// As [`parse_value`].
pub fn value_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    Ok(value_at(buf, 0, limits, 0)?.map(|(_, n)| n))
}

fn value_at<'a>(
    buf: &'a [u8],
    at: usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<(Value<'a>, usize)>, ProtocolError> {
    if depth > limits.max_depth {
        return Err(ProtocolError::TooDeep);
    }
    let Some(&t) = buf.get(at) else {
        return Ok(None);
    };
    let Some(cr) = find_crlf(buf, at + 1) else {
        if buf.len() - at > limits.max_inline {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(None);
    };
    let line = &buf[at + 1..cr];
    let next = cr + 2;
    let count = |max: usize| -> Result<Option<usize>, ProtocolError> {
        match parse_i64(line) {
            Some(-1) => Ok(None),
            Some(n) if n >= 0 && n as u64 <= max as u64 => Ok(Some(n as usize)),
            _ => Err(ProtocolError::BadNumber),
        }
    };
    let v = match t {
        b'+' => Value::Simple(line),
        b'-' => Value::Error(line),
        b':' => Value::Integer(parse_i64(line).ok_or(ProtocolError::BadNumber)?),
        b'_' => Value::Null,
        b'#' => match line {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err(ProtocolError::BadNumber),
        },
        b',' | b'(' => Value::Number(line),
        b'$' | b'=' | b'!' => {
            let Some(n) = count(limits.max_bulk).map_err(|_| ProtocolError::BulkLength)? else {
                return Ok(Some((Value::Null, next)));
            };
            let end = next + n;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::ExpectedCrlf);
            }
            let body = &buf[next..end];
            let v = if t == b'!' {
                Value::Error(body)
            } else {
                Value::Bulk(body)
            };
            return Ok(Some((v, end + 2)));
        }
        b'*' | b'~' | b'>' | b'%' => {
            let Some(n) = count(limits.max_args)? else {
                return Ok(Some((Value::Null, next)));
            };
            let mut at = next;
            if t == b'%' {
                let mut pairs = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let Some((k, a)) = value_at(buf, at, limits, depth + 1)? else {
                        return Ok(None);
                    };
                    let Some((v, b)) = value_at(buf, a, limits, depth + 1)? else {
                        return Ok(None);
                    };
                    pairs.push((k, v));
                    at = b;
                }
                return Ok(Some((Value::Map(pairs), at)));
            }
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let Some((v, a)) = value_at(buf, at, limits, depth + 1)? else {
                    return Ok(None);
                };
                items.push(v);
                at = a;
            }
            return Ok(Some((Value::Array(items), at)));
        }
        other => return Err(ProtocolError::UnknownType(other)),
    };
    Ok(Some((v, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(p: &RequestParser, buf: &[u8]) -> Vec<String> {
        p.args()
            .iter()
            .map(|r| String::from_utf8_lossy(&buf[r.clone()]).into_owned())
            .collect()
    }

    #[test]
    fn multibulk_whole_split_and_pipelined() {
        let cmd = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*1\r\n$4\r\nPING\r\n";
        let mut p = RequestParser::default();
        // Every prefix short of the first command is incomplete.
        let first = 31;
        for cut in 0..first {
            assert_eq!(p.parse(&cmd[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(p.parse(cmd), Ok(Some(first)));
        assert_eq!(words(&p, cmd), ["SET", "k", "hello"]);
        let rest = &cmd[first..];
        assert_eq!(p.parse(rest), Ok(Some(rest.len())));
        assert_eq!(words(&p, rest), ["PING"]);
    }

    #[test]
    fn need_hint_skips_rescans_until_enough() {
        let mut p = RequestParser::default();
        let mut cmd = b"*2\r\n$3\r\nSET\r\n$100\r\n".to_vec();
        assert_eq!(p.parse(&cmd), Ok(None));
        cmd.extend_from_slice(&[b'x'; 100]);
        assert_eq!(p.parse(&cmd), Ok(None));
        cmd.extend_from_slice(b"\r\n");
        assert_eq!(p.parse(&cmd), Ok(Some(cmd.len())));
        assert_eq!(p.arg(&cmd, 1).map(<[u8]>::len), Some(100));
    }

    #[test]
    fn inline_commands() {
        let mut p = RequestParser::default();
        let b = b"  SET  k\tv \r\nPING\n\r\n";
        assert_eq!(p.parse(b), Ok(Some(13)));
        assert_eq!(words(&p, b), ["SET", "k", "v"]);
        assert_eq!(p.parse(&b[13..]), Ok(Some(5)));
        assert_eq!(words(&p, &b[13..]), ["PING"]);
        assert_eq!(p.parse(&b[18..]), Ok(Some(2)));
        assert!(p.args().is_empty());
    }

    #[test]
    fn protocol_errors_are_redis_texts() {
        let mut p = RequestParser::default();
        let e = |p: &mut RequestParser, b: &[u8]| p.parse(b).unwrap_err().to_string();
        assert_eq!(
            e(&mut p, b"*x\r\n"),
            "ERR Protocol error: invalid multibulk length"
        );
        assert_eq!(
            e(&mut p, b"*1\r\n+x\r\n"),
            "ERR Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            e(&mut p, b"*1\r\n$-3\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            e(&mut p, b"*1\r\n$2000000\r\n"),
            "ERR Protocol error: invalid bulk length"
        );
        assert_eq!(
            p.parse(b"*1\r\n$1\r\nab\r\n"),
            Err(ProtocolError::ExpectedCrlf)
        );
        let long = vec![b'a'; 70_000];
        assert_eq!(
            e(&mut p, &long),
            "ERR Protocol error: too big inline request"
        );
        let mut hdr = b"*".to_vec();
        hdr.extend_from_slice(&[b'1'; 70_000]);
        assert_eq!(
            e(&mut p, &hdr),
            "ERR Protocol error: too big mbulk count string"
        );
        // Counts of zero or less are empty commands.
        assert_eq!(p.parse(b"*0\r\n"), Ok(Some(4)));
        assert_eq!(p.parse(b"*-1\r\n"), Ok(Some(5)));
    }

    #[test]
    fn argument_count_is_bounded() {
        let mut p = RequestParser::new(Limits {
            max_args: 2,
            ..Limits::default()
        });
        assert_eq!(p.parse(b"*3\r\n"), Err(ProtocolError::TooManyArgs));
        assert_eq!(p.parse(b"a b c\r\n"), Err(ProtocolError::TooManyArgs));
    }

    #[test]
    fn integers_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"9223372036854775808"[..],
            b"",
            b"-",
            b"+1",
            b" 1",
            b"01",
            b"-0",
            b"1x",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn writer_encodes_both_versions() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, Version::Resp2);
        w.ok();
        w.integer(-5);
        w.bulk(b"hi");
        w.null();
        w.map(1);
        w.error("ERR bad\r\nthing");
        assert_eq!(
            out,
            b"+OK\r\n:-5\r\n$2\r\nhi\r\n$-1\r\n*2\r\n-ERR bad  thing\r\n"
        );
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, Version::Resp3);
        w.null();
        w.map(2);
        w.verbatim(b"x");
        assert_eq!(out, b"_\r\n%2\r\n=5\r\ntxt:x\r\n");
    }

    #[test]
    fn values_round_trip_and_nest_boundedly() {
        let l = Limits::default();
        let b = b"*3\r\n:1\r\n$-1\r\n%1\r\n+a\r\n#t\r\nrest";
        let (v, n) = parse_value(b, &l).unwrap().unwrap();
        assert_eq!(n, b.len() - 4);
        assert_eq!(
            v,
            Value::Array(vec![
                Value::Integer(1),
                Value::Null,
                Value::Map(vec![(Value::Simple(b"a"), Value::Boolean(true))])
            ])
        );
        for cut in 0..n {
            assert_eq!(value_len(&b[..cut], &l), Ok(None));
        }
        let deep = b"*1\r\n".repeat(40);
        assert_eq!(value_len(&deep, &l), Err(ProtocolError::TooDeep));
        assert_eq!(
            value_len(b"?x\r\n", &l),
            Err(ProtocolError::UnknownType(b'?'))
        );
    }
}
