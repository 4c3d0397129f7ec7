//! HTTP/1.1 requests: the parser never panics, a refusal carries one of
//! the statuses it promises, a whole request lies inside its input with a
//! body within the limit, and the same requests (or the same refusal) are
//! found whether the bytes come at once or in pieces.
#![no_main]

use dataplane::proto::http::{Limits, Parsed, RequestParser};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
struct Seen {
    method: Vec<u8>,
    path: Vec<u8>,
    headers: usize,
    body: Vec<u8>,
    keep_alive: bool,
}

fn requests(data: &[u8], step: usize, limits: Limits) -> (Vec<Seen>, Option<u16>) {
    let mut p = RequestParser::new(limits);
    let mut got = Vec::new();
    let mut used = 0;
    let mut avail = if step == 0 { data.len() } else { step.min(data.len()) };
    while used < data.len() {
        match p.parse(&data[used..avail]) {
            Ok(Parsed::Complete(n)) => {
                assert!(n > 0 && used + n <= avail);
                let r = p.request(&data[used..used + n]);
                assert!(r.body.len() <= limits.max_body);
                assert!(r.headers().count() <= limits.max_headers);
                got.push(Seen {
                    method: r.method.to_vec(),
                    path: r.path.to_vec(),
                    headers: r.headers().count(),
                    body: r.body.to_vec(),
                    keep_alive: r.keep_alive(),
                });
                used += n;
            }
            Ok(Parsed::Incomplete { .. }) => {
                if avail == data.len() {
                    break;
                }
                avail = (avail + step.max(1)).min(data.len());
            }
            Err(e) => {
                assert!([400, 413, 414, 431, 501, 505].contains(&e.status), "{e}");
                return (got, Some(e.status));
            }
        }
    }
    (got, None)
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_target: 256,
        max_head: 1024,
        max_headers: 16,
        max_body: 2048,
    };
    let step = data.first().map_or(1, |&b| usize::from(b % 23) + 1);
    let whole = requests(data, 0, limits);
    let pieces = requests(data, step, limits);
    // A refusal may come earlier in pieces only for a head that can be
    // judged before it is whole (a target already over its limit); the
    // requests before it are the same.
    if whole.1 == pieces.1 {
        assert_eq!(whole.0, pieces.0, "pieces of {step}");
    } else {
        let n = whole.0.len().min(pieces.0.len());
        assert_eq!(whole.0[..n], pieces.0[..n], "pieces of {step}");
    }
});
