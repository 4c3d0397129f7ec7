//! A TCP echo server on one lcore with `dataplane::transport`: poll, take
//! the events, answer through the same `Transport`. A client thread sends
//! a few lines and checks what comes back; the server stops when the
//! client has gone.
//!
//! ```sh
//! cargo run -p dataplane-apps --example echo
//! ```

use dataplane::transport::{Config, Event, Transport};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() -> dataplane::Result<()> {
    // io_uring where it runs, epoll elsewhere (the skip is logged).
    let mut t = Transport::new(Config::default())?;
    let listener = t.listen("127.0.0.1:0".parse().expect("an address"))?;
    let addr = t.listener_addr(listener)?;
    println!("echo: {} engine listening on {addr}", t.engine());

    let client = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = TcpStream::connect(addr)?;
        let mut lines = BufReader::new(s.try_clone()?);
        for word in ["hello", "shared", "nothing"] {
            writeln!(s, "{word}")?;
            let mut back = String::new();
            lines.read_line(&mut back)?;
            println!("client: sent {word:?}, got {:?}", back.trim_end());
            assert_eq!(back.trim_end(), word);
        }
        Ok(())
    });

    // The lcore's loop, bounded for the example.
    let end = Instant::now() + Duration::from_secs(10);
    let mut done = false;
    while !done && Instant::now() < end {
        t.poll()?;
        while let Some(ev) = t.next_event() {
            match ev {
                Event::Accepted { conn, .. } => println!("server: accepted {conn}"),
                Event::Readable(c) => {
                    // Echo what the send buffer takes; the rest stays
                    // received until the next `Writable`.
                    let data = t.peek(c)?.to_vec();
                    let n = t.write(c, &data)?;
                    t.consume(c, n)?;
                }
                Event::PeerClosed(c) => t.close(c)?,
                Event::Closed(c, why) => {
                    println!("server: {c} closed ({why:?})");
                    done = true;
                }
                _ => {}
            }
        }
    }
    client
        .join()
        .expect("the client thread")
        .map_err(|e| dataplane::Error::io("echo client", e))?;
    let s = t.stats();
    println!(
        "server: {} bytes in, {} out, {} system calls to wait",
        s.rx_bytes, s.tx_bytes, s.waits
    );
    Ok(())
}
