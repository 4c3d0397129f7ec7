//! RESP: the request parser never panics, makes progress, gives argument
//! ranges inside its input, and finds the same commands (or the same
//! error) whether the bytes come at once or in pieces; an encoded command
//! parses back to itself; the reply reader agrees with its own length.
#![no_main]

use dataplane::proto::resp::{Limits, RequestParser, parse_value, value_len};
use libfuzzer_sys::fuzz_target;

type Outcome = (Vec<Vec<Vec<u8>>>, Option<String>);

/// Every command in `data`, feeding it `step` bytes at a time (0: whole).
fn commands(data: &[u8], step: usize, limits: Limits) -> Outcome {
    let mut p = RequestParser::new(limits);
    let mut got = Vec::new();
    let mut used = 0;
    let mut avail = if step == 0 { data.len() } else { step.min(data.len()) };
    loop {
        match p.parse(&data[used..avail]) {
            Ok(Some(n)) => {
                assert!(n > 0 && used + n <= avail);
                let buf = &data[used..used + n];
                let args: Vec<Vec<u8>> = p
                    .args()
                    .iter()
                    .map(|r| {
                        assert!(r.start <= r.end && r.end <= n);
                        buf[r.clone()].to_vec()
                    })
                    .collect();
                assert!(args.len() <= limits.max_args);
                got.push(args);
                used += n;
            }
            Ok(None) => {
                if avail == data.len() {
                    return (got, None);
                }
                avail = (avail + step.max(1)).min(data.len());
            }
            Err(e) => return (got, Some(e.to_string())),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bulk: 4096,
        max_args: 64,
        max_inline: 1024,
        max_depth: 8,
    };
    let step = data.first().map_or(1, |&b| usize::from(b % 17) + 1);
    let whole = commands(data, 0, limits);
    let pieces = commands(data, step, limits);
    assert_eq!(whole, pieces, "pieces of {step}");

    // Encoded as a multibulk, each command parses back to itself.
    for args in whole.0.iter().filter(|a| !a.is_empty()) {
        let mut enc = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            enc.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            enc.extend_from_slice(a);
            enc.extend_from_slice(b"\r\n");
        }
        let mut p = RequestParser::new(limits);
        assert_eq!(p.parse(&enc), Ok(Some(enc.len())));
        let back: Vec<&[u8]> = p.args().iter().map(|r| &enc[r.clone()]).collect();
        assert_eq!(back, args.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    // The reply reader.
    match (parse_value(data, &limits), value_len(data, &limits)) {
        (Ok(Some((_, n))), Ok(Some(m))) => assert!(n == m && n <= data.len()),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        (a, b) => panic!("parse_value {a:?} and value_len {b:?} disagree"),
    }
});
