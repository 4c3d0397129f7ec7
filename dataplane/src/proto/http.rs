//! HTTP/1.1 (RFC 9112) for servers: a request parser that reads in place,
//! a response writer, and a router from method and path to handlers.
//!
//! **Parsing.** [`RequestParser::parse`] takes every byte received and
//! not yet consumed and finds the first whole request: the request line
//! and header fields are ranges of that slice, and a `Content-Length`
//! body is a slice of it too (nothing copied). A chunked body is decoded
//! into the parser's own buffer, bounded by [`Limits::max_body`]. An
//! incomplete request returns [`Parsed::Incomplete`], which says when
//! the client waits for `100 Continue` before it sends its body.
//!
//! **Errors** carry the status a server answers before it closes the
//! connection: 400 for a malformed request (bad request line, a field
//! without a colon, whitespace before the colon, a bad or conflicting
//! `Content-Length`, both `Content-Length` and `Transfer-Encoding`, a bad
//! chunk), 413 for a body over the limit, 414 for a request target over
//! the limit, 431 for header fields over the limits, 501 for a transfer
//! coding other than chunked, 505 for a version other than HTTP/1.0 and
//! 1.1.
//!
//! **Connections.** [`Request::keep_alive`] applies RFC 9112's rule:
//! HTTP/1.1 persists unless `Connection: close`, HTTP/1.0 closes unless
//! `Connection: keep-alive`. Pipelined requests are parsed one after the
//! other from the same bytes; answering them in order is the server's
//! part.

use std::ops::Range;

/// Bounds on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest request target (8 KiB; over it, 414).
    pub max_target: usize,
    /// The bytes of the request line and all header fields together
    /// (16 KiB; over it, 431).
    pub max_head: usize,
    /// Header fields (100; over it, 431).
    pub max_headers: usize,
    /// The longest body (1 MiB; over it, 413).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_target: 8 * 1024,
            max_head: 16 * 1024,
            max_headers: 100,
            max_body: 1 << 20,
        }
    }
}

/// A request the parser refuses: the status to answer with, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    /// 400, 413, 414, 431, 501 or 505.
    pub status: u16,
    /// What was wrong, for the log and the response body.
    pub why: &'static str,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, reason(self.status), self.why)
    }
}

impl std::error::Error for Error {}

const fn err(status: u16, why: &'static str) -> Error {
    Error { status, why }
}

/// What [`RequestParser::parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request of this many bytes; see [`RequestParser::request`].
    Complete(usize),
    /// More bytes are needed. `expects_continue`: the header is whole and
    /// asks for `100 Continue` before the body (a server sends it once).
    Incomplete {
        /// The client waits for `100 Continue`.
        expects_continue: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(usize),
    Chunked,
}

/// Reads requests in place; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    method: Range<usize>,
    target: Range<usize>,
    minor: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
    body: Range<usize>,
    chunked: Vec<u8>,
    is_chunked: bool,
    keep_alive: bool,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(buf: &[u8], mut r: Range<usize>) -> Range<usize> {
    while r.start < r.end && matches!(buf[r.start], b' ' | b'\t') {
        r.start += 1;
    }
    while r.end > r.start && matches!(buf[r.end - 1], b' ' | b'\t') {
        r.end -= 1;
    }
    r
}

fn parse_usize(s: &[u8], radix: u32) -> Option<usize> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: usize = 0;
    for &b in s {
        let d = (b as char).to_digit(radix)? as usize;
        v = v.checked_mul(radix as usize)?.checked_add(d)?;
    }
    Some(v)
}

/// Whether the comma-separated list `value` holds `token`, any case.
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

impl RequestParser {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            method: 0..0,
            target: 0..0,
            minor: 1,
            headers: Vec::new(),
            body: 0..0,
            chunked: Vec::new(),
            is_chunked: false,
            keep_alive: true,
        }
    }

    /// Finds the first whole request in `buf`.
    ///
    /// # Errors
    ///
    /// [`Error`] with the status to answer; the connection should be
    /// closed after it.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Parsed, Error> {
        self.headers.clear();
        self.is_chunked = false;
        // RFC 9112 2.2: ignore empty lines before the request line.
        let mut at = 0;
        while at < buf.len() && matches!(buf[at], b'\r' | b'\n') {
            at += 1;
        }
        let Some(head_end) = memchr::memmem::find(&buf[at..], b"\r\n\r\n") else {
            return self.incomplete_head(&buf[at..]);
        };
        let head_end = at + head_end;
        if head_end + 4 - at > self.limits.max_head {
            return Err(self.head_too_big(&buf[at..]));
        }
        let line_end =
            memchr::memmem::find(&buf[at..head_end + 2], b"\r\n").map_or(head_end, |i| at + i);
        self.request_line(buf, at, line_end)?;
        let framing = self.fields(buf, line_end + 2, head_end)?;
        let body_at = head_end + 4;
        match framing {
            Framing::None => {
                self.body = body_at..body_at;
                Ok(Parsed::Complete(body_at))
            }
            Framing::Length(n) => {
                if n > self.limits.max_body {
                    return Err(err(413, "Content-Length over the limit"));
                }
                if buf.len() < body_at + n {
                    return Ok(Parsed::Incomplete {
                        expects_continue: self.expects_continue(buf),
                    });
                }
                self.body = body_at..body_at + n;
                Ok(Parsed::Complete(body_at + n))
            }
            Framing::Chunked => match self.chunks(buf, body_at)? {
                Some(end) => {
                    self.is_chunked = true;
                    Ok(Parsed::Complete(end))
                }
                None => Ok(Parsed::Incomplete {
                    expects_continue: self.expects_continue(buf),
                }),
            },
        }
    }

    fn incomplete_head(&self, buf: &[u8]) -> Result<Parsed, Error> {
        if buf.len() > self.limits.max_head {
            return Err(self.head_too_big(buf));
        }
        // A request line already over the target limit need not wait.
        if memchr::memmem::find(buf, b"\r\n").is_none() && buf.len() > self.limits.max_target + 64 {
            return Err(err(414, "request target over the limit"));
        }
        Ok(Parsed::Incomplete {
            expects_continue: false,
        })
    }

    fn head_too_big(&self, buf: &[u8]) -> Error {
        match memchr::memmem::find(buf, b"\r\n") {
            None => err(414, "request target over the limit"),
            Some(i) if i > self.limits.max_target + 64 => err(414, "request target over the limit"),
            Some(_) => err(431, "header fields over the limit"),
        }
    }

    fn request_line(&mut self, buf: &[u8], at: usize, end: usize) -> Result<(), Error> {
        let line = &buf[at..end];
        let bad = err(400, "malformed request line");
        let sp1 = memchr::memchr(b' ', line).ok_or(bad)?;
        let sp2 = memchr::memrchr(b' ', line).ok_or(bad)?;
        if sp1 == 0 || sp2 <= sp1 + 1 || !line[..sp1].iter().all(|&b| is_tchar(b)) {
            return Err(bad);
        }
        let target = &line[sp1 + 1..sp2];
        if target.len() > self.limits.max_target {
            return Err(err(414, "request target over the limit"));
        }
        if target.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(bad);
        }
        let version = &line[sp2 + 1..];
        self.minor = match version {
            b"HTTP/1.1" => 1,
            b"HTTP/1.0" => 0,
            v if v.len() == 8
                && v.starts_with(b"HTTP/")
                && v[5].is_ascii_digit()
                && v[6] == b'.'
                && v[7].is_ascii_digit() =>
            {
                return Err(err(505, "HTTP version not supported"));
            }
            _ => return Err(bad),
        };
        self.method = at..at + sp1;
        self.target = at + sp1 + 1..at + sp2;
        Ok(())
    }

    fn fields(&mut self, buf: &[u8], mut at: usize, end: usize) -> Result<Framing, Error> {
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut connection_close = self.minor == 0;
        while at < end {
            let eol = memchr::memmem::find(&buf[at..end + 2], b"\r\n").map_or(end, |i| at + i);
            let line = &buf[at..eol];
            if matches!(line.first(), Some(b' ' | b'\t')) {
                return Err(err(400, "obsolete line folding"));
            }
            let colon =
                memchr::memchr(b':', line).ok_or(err(400, "header field without a colon"))?;
            if colon == 0 || !line[..colon].iter().all(|&b| is_tchar(b)) {
                return Err(err(400, "malformed header field name"));
            }
            if self.headers.len() == self.limits.max_headers {
                return Err(err(431, "too many header fields"));
            }
            let name = at..at + colon;
            let value = trim(buf, at + colon + 1..eol);
            let v = &buf[value.clone()];
            if v.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
                return Err(err(400, "control character in a header field"));
            }
            let n = &buf[name.clone()];
            if n.eq_ignore_ascii_case(b"content-length") {
                // A list of equal values is one value (RFC 9112 6.3).
                for part in v.split(|&b| b == b',') {
                    let x = parse_usize(part.trim_ascii(), 10)
                        .ok_or(err(400, "malformed Content-Length"))?;
                    if length.is_some_and(|l| l != x) {
                        return Err(err(400, "conflicting Content-Length"));
                    }
                    length = Some(x);
                }
            } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
                if chunked {
                    return Err(err(400, "chunked applied twice"));
                }
                // Chunked must be the last (and here, the only) coding.
                if !v.eq_ignore_ascii_case(b"chunked") {
                    return Err(err(501, "transfer coding not implemented"));
                }
                chunked = true;
            } else if n.eq_ignore_ascii_case(b"connection") {
                if has_token(v, b"close") {
                    connection_close = true;
                } else if has_token(v, b"keep-alive") {
                    connection_close = false;
                }
            }
            self.headers.push((name, value));
            at = eol + 2;
        }
        self.keep_alive = !connection_close;
        match (chunked, length) {
            (true, Some(_)) => Err(err(400, "both Content-Length and Transfer-Encoding")),
            (true, None) => Ok(Framing::Chunked),
            (false, Some(n)) => Ok(Framing::Length(n)),
            (false, None) => Ok(Framing::None),
        }
    }

    /// Decodes a chunked body from `at` into `self.chunked`; the end of
    /// the request when whole.
    fn chunks(&mut self, buf: &[u8], mut at: usize) -> Result<Option<usize>, Error> {
        self.chunked.clear();
        loop {
            let Some(eol) = memchr::memmem::find(&buf[at..], b"\r\n").map(|i| at + i) else {
                if buf.len() - at > 1024 {
                    return Err(err(400, "chunk size line too long"));
                }
                return Ok(None);
            };
            let line = &buf[at..eol];
            let size_part = line.split(|&b| b == b';').next().unwrap_or_default();
            let size =
                parse_usize(size_part.trim_ascii(), 16).ok_or(err(400, "malformed chunk size"))?;
            at = eol + 2;
            if size == 0 {
                // Trailer fields, then the empty line.
                loop {
                    let Some(eol) = memchr::memmem::find(&buf[at..], b"\r\n").map(|i| at + i)
                    else {
                        return Ok(None);
                    };
                    if eol - at > self.limits.max_head {
                        return Err(err(431, "trailer fields over the limit"));
                    }
                    let empty = eol == at;
                    at = eol + 2;
                    if empty {
                        return Ok(Some(at));
                    }
                }
            }
            if self.chunked.len() + size > self.limits.max_body {
                return Err(err(413, "chunked body over the limit"));
            }
            if buf.len() < at + size + 2 {
                return Ok(None);
            }
            if &buf[at + size..at + size + 2] != b"\r\n" {
                return Err(err(400, "chunk not followed by CRLF"));
            }
            self.chunked.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }

    fn expects_continue(&self, buf: &[u8]) -> bool {
        self.minor == 1
            && self.headers.iter().any(|(n, v)| {
                buf[n.clone()].eq_ignore_ascii_case(b"expect")
                    && buf[v.clone()].eq_ignore_ascii_case(b"100-continue")
            })
    }

    /// The request the last [`Self::parse`] found complete, in the `buf`
    /// it was given.
    pub fn request<'a>(&'a self, buf: &'a [u8]) -> Request<'a> {
        let target = &buf[self.target.clone()];
        let (path, query) = match memchr::memchr(b'?', target) {
            Some(i) => (&target[..i], Some(&target[i + 1..])),
            None => (target, None),
        };
        Request {
            method: &buf[self.method.clone()],
            path,
            query,
            minor: self.minor,
            headers: &self.headers,
            buf,
            body: if self.is_chunked {
                &self.chunked
            } else {
                &buf[self.body.clone()]
            },
            keep_alive: self.keep_alive,
        }
    }
}

/// A parsed request, borrowed from the received bytes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a [u8],
    /// The target's path (before `?`).
    pub path: &'a [u8],
    /// The target's query (after `?`).
    pub query: Option<&'a [u8]>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    headers: &'a [(Range<usize>, Range<usize>)],
    buf: &'a [u8],
    /// The body (decoded, when chunked).
    pub body: &'a [u8],
    keep_alive: bool,
}

impl<'a> Request<'a> {
    /// The first field named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every field, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        let buf = self.buf;
        self.headers
            .iter()
            .map(move |(n, v)| (&buf[n.clone()], &buf[v.clone()]))
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
}

/// The reason phrase of a status.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// `Date`'s value for a time in seconds since the Unix epoch
/// (IMF-fixdate, RFC 9110 5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[(days % 7) as usize],
        day,
        MON[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A response being written into a connection's output: fields go
/// straight into the output as they are added, and `send` puts the status
/// line in front of them (a move of the few bytes of fields, no
/// allocation per response), then `Content-Length` and the body.
#[derive(Debug)]
pub struct Response<'a> {
    out: &'a mut Vec<u8>,
    /// Where this response starts in `out`.
    start: usize,
    status: u16,
    head_only: bool,
    keep_alive: bool,
}

impl<'a> Response<'a> {
    /// A `200 OK` for `req` appended to `out` when sent; `date` is the
    /// `Date` value (cached by the caller, changing once a second). A
    /// response to `HEAD` carries its fields and no body.
    pub fn new(out: &'a mut Vec<u8>, req: &Request<'_>, date: &str) -> Self {
        let start = out.len();
        out.extend_from_slice(b"Server: dataplane\r\nDate: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\n");
        Self {
            out,
            start,
            status: 200,
            head_only: req.method == b"HEAD",
            keep_alive: req.keep_alive(),
        }
    }

    /// Sets the status.
    pub fn status(&mut self, status: u16) -> &mut Self {
        self.status = status;
        self
    }

    /// Adds a field; `value` must not hold `\r` or `\n`.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// The status set so far.
    pub fn status_code(&self) -> u16 {
        self.status
    }

    /// Closes the connection after this response.
    pub fn close(&mut self) -> &mut Self {
        self.keep_alive = false;
        self
    }

    /// Whether the connection stays open after this response.
    pub fn keeps_alive(&self) -> bool {
        self.keep_alive
    }

    /// Writes the response with `body`.
    pub fn send(&mut self, body: &[u8]) {
        let mut n = itoa::Buffer::new();
        self.out.extend_from_slice(b"Content-Length: ");
        self.out.extend_from_slice(n.format(body.len()).as_bytes());
        self.out.extend_from_slice(b"\r\n");
        if !self.keep_alive {
            self.out.extend_from_slice(b"Connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        // The status line, now that the status is final, before the fields.
        let mut line = [0u8; 64];
        let mut len = 0;
        for part in [
            &b"HTTP/1.1 "[..],
            n.format(self.status).as_bytes(),
            b" ",
            reason(self.status).as_bytes(),
            b"\r\n",
        ] {
            line[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        self.out
            .splice(self.start..self.start, line[..len].iter().copied());
        if !self.head_only {
            self.out.extend_from_slice(body);
        }
    }
}

/// A handler: reads the request, writes the response.
pub type Handler = Box<dyn FnMut(&Request<'_>, &mut Response<'_>) + Send>;

/// Maps a method and a path to a handler: exact paths, and prefixes
/// ending in `/` (the longest match wins). A path with no route gets 404;
/// a path whose routes take other methods gets 405 with `Allow`.
#[derive(Default)]
pub struct Router {
    routes: Vec<(Vec<u8>, Vec<u8>, bool, Handler)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `method` on exactly `path`. `GET` routes answer `HEAD` too.
    pub fn route(
        &mut self,
        method: &str,
        path: &str,
        h: impl FnMut(&Request<'_>, &mut Response<'_>) + Send + 'static,
    ) -> &mut Self {
        self.routes.push((
            method.as_bytes().to_vec(),
            path.as_bytes().to_vec(),
            false,
            Box::new(h),
        ));
        self
    }

    /// Routes `method` on every path under `prefix` (which ends in `/`).
    pub fn prefix(
        &mut self,
        method: &str,
        prefix: &str,
        h: impl FnMut(&Request<'_>, &mut Response<'_>) + Send + 'static,
    ) -> &mut Self {
        self.routes.push((
            method.as_bytes().to_vec(),
            prefix.as_bytes().to_vec(),
            true,
            Box::new(h),
        ));
        self
    }

    /// Answers `req` into `res`.
    pub fn handle(&mut self, req: &Request<'_>, res: &mut Response<'_>) {
        let matches = |path: &[u8], prefix: bool| {
            if prefix {
                req.path.starts_with(path)
            } else {
                req.path == path
            }
        };
        let method = if req.method == b"HEAD" {
            &b"GET"[..]
        } else {
            req.method
        };
        let mut best: Option<usize> = None;
        let mut allowed: Vec<&[u8]> = Vec::new();
        for (i, (m, p, prefix, _)) in self.routes.iter().enumerate() {
            if !matches(p, *prefix) {
                continue;
            }
            if m.as_slice() != method {
                allowed.push(m);
                continue;
            }
            if best.is_none_or(|b| self.routes[b].1.len() < p.len()) {
                best = Some(i);
            }
        }
        match best {
            Some(i) => (self.routes[i].3)(req, res),
            None if !allowed.is_empty() => {
                allowed.sort_unstable();
                allowed.dedup();
                let allow = allowed
                    .iter()
                    .map(|m| String::from_utf8_lossy(m))
                    .collect::<Vec<_>>()
                    .join(", ");
                res.status(405)
                    .header("Allow", &allow)
                    .send(b"method not allowed\n");
            }
            None => {
                res.status(404).send(b"not found\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(p: &mut RequestParser, b: &[u8]) -> usize {
        match p.parse(b) {
            Ok(Parsed::Complete(n)) => n,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(b)),
        }
    }

    fn status(b: &[u8]) -> u16 {
        RequestParser::default()
            .parse(b)
            .expect_err("refused")
            .status
    }

    #[test]
    fn requests_whole_in_pieces_and_pipelined() {
        let two = b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let mut p = RequestParser::default();
        let first = 32;
        for cut in 0..first {
            assert!(
                matches!(p.parse(&two[..cut]), Ok(Parsed::Incomplete { .. })),
                "{cut}"
            );
        }
        assert_eq!(complete(&mut p, two), first);
        let r = p.request(two);
        assert_eq!(
            (r.method, r.path, r.query),
            (&b"GET"[..], &b"/a"[..], Some(&b"x=1"[..]))
        );
        assert_eq!(r.header("host"), Some(&b"h"[..]));
        assert!(r.keep_alive());
        let rest = &two[first..];
        for cut in 0..rest.len() {
            assert!(
                matches!(p.parse(&rest[..cut]), Ok(Parsed::Incomplete { .. })),
                "{cut}"
            );
        }
        assert_eq!(complete(&mut p, rest), rest.len());
        assert_eq!(p.request(rest).body, b"hello");
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let b = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";
        let mut p = RequestParser::default();
        for cut in 0..b.len() {
            assert!(
                matches!(p.parse(&b[..cut]), Ok(Parsed::Incomplete { .. })),
                "{cut}"
            );
        }
        assert_eq!(complete(&mut p, b), b.len());
        assert_eq!(p.request(b).body, b"hello world");
    }

    #[test]
    fn expect_continue_is_reported_once_the_head_is_whole() {
        let b = b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let mut p = RequestParser::default();
        assert_eq!(
            p.parse(b),
            Ok(Parsed::Incomplete {
                expects_continue: true
            })
        );
        let mut full = b.to_vec();
        full.extend_from_slice(b"abc");
        assert_eq!(complete(&mut p, &full), full.len());
    }

    #[test]
    fn bad_requests_get_their_status() {
        assert_eq!(status(b"GET /\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status(b"GET / FOO/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"G(T / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nName : v\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), 400);
        assert_eq!(status(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            501
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            400
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(long.as_bytes()), 414);
        let long = format!("GET /{}", "a".repeat(20_000));
        assert_eq!(status(long.as_bytes()), 414);
        let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(20_000));
        assert_eq!(status(big.as_bytes()), 431);
        // Equal values in a list are one length.
        let mut p = RequestParser::default();
        let b = b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\nok";
        assert_eq!(complete(&mut p, b), b.len());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let mut p = RequestParser::default();
        for (req, keep) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        ] {
            complete(&mut p, req);
            assert_eq!(
                p.request(req).keep_alive(),
                keep,
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn responses_and_routes() {
        let mut r = Router::new();
        r.route("GET", "/", |_, res| res.send(b"root"));
        r.prefix("GET", "/files/", |req, res| res.send(req.path));
        r.route("POST", "/echo", |req, res| res.send(req.body));
        let mut p = RequestParser::default();
        let mut run = |raw: &[u8]| {
            complete(&mut p, raw);
            let req = p.request(raw);
            let mut out = Vec::new();
            r.handle(&req, &mut Response::new(&mut out, &req, "D"));
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(
            run(b"GET / HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK\r\nServer: dataplane\r\nDate: D\r\nContent-Length: 4\r\n\r\nroot"
        );
        assert!(run(b"HEAD / HTTP/1.1\r\n\r\n").ends_with("Content-Length: 4\r\n\r\n"));
        assert!(
            run(b"GET /files/a/b HTTP/1.0\r\n\r\n")
                .ends_with("Connection: close\r\n\r\n/files/a/b")
        );
        assert!(run(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 Not Found"));
        let r405 = run(b"GET /echo HTTP/1.1\r\n\r\n");
        assert!(
            r405.starts_with("HTTP/1.1 405") && r405.contains("Allow: POST\r\n"),
            "{r405}"
        );
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
    }
}
