//! IPv4 fragments (RFC 791 section 3.2): reassembly of what arrives, and
//! fragmentation of a datagram too long for one frame.
//!
//! **Reassembly.** Fragments are held per datagram, keyed by source,
//! destination, protocol and identification, until every byte has come;
//! the datagram is then handed on whole. It is a copy: the fragments
//! arrived in several mbufs, and a datagram that needed fragmenting is off
//! the fast path anyway (TCP sets DF and sizes its segments to the path).
//! The rules are Linux's (`net/ipv4/ip_fragment.c`), for its reasons:
//! - a fragment overlapping one already held drops the whole datagram
//!   (overlaps are how teardrop-style attacks and IDS evasion work; Linux
//!   since 4.19, RFC 5722 for IPv6); an exact duplicate is ignored;
//! - a datagram still incomplete after [`ReassemblyLimits::timeout`]
//!   (30 s, `ipfrag_time`) is dropped;
//! - the bytes held are bounded ([`ReassemblyLimits::memory`], 4 MiB as
//!   `ipfrag_high_thresh`): over it, a new datagram is refused and one
//!   that would grow past it is dropped;
//! - a datagram that would be longer than 65,535 bytes (the ping of
//!   death) is dropped, and every fragment but the last must carry a
//!   multiple of 8 bytes.
//!
//! A datagram given up after the timeout is counted
//! ([`StackStats::reassembly_timeouts`]) and, if its first fragment came,
//! handed back ([`Expired`]) for the stack to send ICMP "fragment
//! reassembly time exceeded" (RFC 792 type 11 code 1; RFC 1122 section
//! 3.3.2 asks for it only then, as Linux does).
//!
//! **Fragmentation** ([`super::Io::build_fragments`]): each fragment but
//! the last carries the largest multiple of 8 bytes that fits the MTU.

use super::StackStats;
use crate::wire::{EthernetAddress, Ipv4Repr};
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The longest IPv4 datagram, header included.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams in reassembly at once; fragments of more are refused.
const MAX_PENDING: usize = 1024;
/// Entries the expiry queue may hold before those of datagrams already
/// completed or dropped are swept out (each datagram leaves its entry
/// behind until the timeout would have passed: without the sweep, a
/// steady stream of datagrams beside one left waiting would grow the
/// queue by the rate times the timeout).
const ORDER_SWEEP: usize = 4 * MAX_PENDING;
/// Fragments one datagram may come in (a 64 KiB datagram over a 576-byte
/// MTU takes 118); more drop it.
const MAX_FRAGMENTS: usize = 256;

/// The bounds of reassembly; see the module's documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// How long a datagram may wait for its missing fragments.
    pub timeout: Duration,
    /// Bytes held for incomplete datagrams (0: fragments are dropped).
    pub memory: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            timeout: Duration::from_secs(30),
            memory: 4 << 20,
        }
    }
}

/// What identifies a datagram's fragments (RFC 791).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ident: u16,
}

/// A datagram being put together.
#[derive(Debug)]
struct Pending {
    started: Instant,
    /// The payload so far, as long as the furthest fragment's end.
    data: Vec<u8>,
    /// The fragments held, as (start, end) of the payload: sorted, none
    /// overlapping.
    have: Vec<(usize, usize)>,
    /// Bytes held: the sum of `have`'s lengths.
    received: usize,
    /// The payload's length, once the last fragment (MF clear) came.
    total: Option<usize>,
    /// The first fragment's header, options included, and the MAC it
    /// came from, once it came.
    header: Option<(Ipv4Repr, Vec<u8>, EthernetAddress)>,
}

/// A datagram put back together.
#[derive(Debug)]
pub(super) struct Datagram {
    /// Its header as one unfragmented datagram's.
    pub(super) ip: Ipv4Repr,
    /// The first fragment's header bytes (for an ICMP error's quote).
    pub(super) header: Vec<u8>,
    /// The whole payload.
    pub(super) payload: Vec<u8>,
}

/// A datagram given up after the timeout whose first fragment came: what
/// an ICMP time-exceeded message quotes, and where it goes.
#[derive(Debug)]
pub(super) struct Expired {
    /// The MAC its first fragment came from.
    pub(super) mac: EthernetAddress,
    /// The first fragment's header, parsed.
    pub(super) ip: Ipv4Repr,
    /// Its bytes.
    pub(super) header: Vec<u8>,
    /// The first eight bytes of its payload (fewer if it had fewer).
    pub(super) first: Vec<u8>,
}

/// Why a fragment, or its datagram, is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refuse {
    /// Only this fragment (not a multiple of 8 bytes, or refused for the
    /// limits); what was held stays.
    Fragment,
    /// The whole datagram (an overlap, too long, inconsistent ends, too
    /// many fragments, or too much memory).
    Datagram,
}

/// One stack's reassembly table.
#[derive(Debug)]
pub(super) struct Reassembly {
    table: HashMap<Key, Pending>,
    /// Each datagram's key and start, oldest first, for the timeout.
    order: VecDeque<(Instant, Key)>,
    /// Bytes allocated for the datagrams in `table`.
    held: usize,
    limits: ReassemblyLimits,
}

impl Reassembly {
    pub(super) fn new(limits: ReassemblyLimits) -> Self {
        Reassembly {
            table: HashMap::new(),
            order: VecDeque::new(),
            held: 0,
            limits,
        }
    }

    /// Datagrams waiting for fragments.
    pub(super) fn pending(&self) -> usize {
        self.table.len()
    }

    /// Takes a fragment from `mac` (`ip` parsed from its `header`,
    /// `payload` what follows the header); the datagram once it is
    /// complete. Counts what it refuses or drops in `stats`.
    pub(super) fn add(
        &mut self,
        now: Instant,
        mac: EthernetAddress,
        ip: &Ipv4Repr,
        header: &[u8],
        payload: &[u8],
        stats: &mut StackStats,
    ) -> Option<Datagram> {
        let key = Key {
            src: ip.src_addr,
            dst: ip.dst_addr,
            protocol: ip.protocol.0,
            ident: ip.ident,
        };
        match self.insert(now, key, (mac, ip), header, payload) {
            Ok(true) => {
                let p = self.remove(&key)?;
                let (mut ip, header, _) = p.header?;
                ip.more_frags = false;
                ip.frag_offset = 0;
                ip.payload_len = p.received;
                stats.reassembled += 1;
                Some(Datagram {
                    ip,
                    header,
                    payload: p.data,
                })
            }
            Ok(false) => None,
            Err(Refuse::Fragment) => {
                stats.reassembly_dropped += 1;
                None
            }
            Err(Refuse::Datagram) => {
                self.remove(&key);
                stats.reassembly_dropped += 1;
                None
            }
        }
    }

    /// Adds the fragment to its datagram; true once the datagram is
    /// whole.
    fn insert(
        &mut self,
        now: Instant,
        key: Key,
        (mac, ip): (EthernetAddress, &Ipv4Repr),
        header: &[u8],
        payload: &[u8],
    ) -> Result<bool, Refuse> {
        let start = usize::from(ip.frag_offset);
        let end = start + payload.len();
        let last = !ip.more_frags;
        if !last && (payload.is_empty() || !payload.len().is_multiple_of(8)) {
            return Err(Refuse::Fragment);
        }
        if !self.table.contains_key(&key) {
            if self.table.len() >= MAX_PENDING || self.held >= self.limits.memory {
                return Err(Refuse::Fragment);
            }
            self.table.insert(
                key,
                Pending {
                    started: now,
                    data: Vec::new(),
                    have: Vec::new(),
                    received: 0,
                    total: None,
                    header: None,
                },
            );
            self.order.push_back((now, key));
            if self.order.len() > ORDER_SWEEP {
                let table = &self.table;
                self.order
                    .retain(|(started, k)| table.get(k).is_some_and(|p| p.started == *started));
            }
        }
        let Some(p) = self.table.get_mut(&key) else {
            return Err(Refuse::Fragment);
        };
        if header.len() + end > MAX_DATAGRAM || p.have.len() >= MAX_FRAGMENTS {
            return Err(Refuse::Datagram);
        }
        // Where it goes among the fragments held, and whether it touches
        // a neighbour's bytes.
        let at = p.have.partition_point(|&(s, _)| s < start);
        if p.have.get(at) == Some(&(start, end)) {
            // An exact duplicate (a retransmission somewhere): ignored.
            return Ok(false);
        }
        let overlaps_before = at > 0 && p.have[at - 1].1 > start;
        let overlaps_after = p.have.get(at).is_some_and(|&(s, _)| s < end);
        if overlaps_before || overlaps_after {
            return Err(Refuse::Datagram);
        }
        // The ends must agree: one last fragment, nothing beyond it.
        let furthest = p.have.last().map_or(0, |&(_, e)| e).max(end);
        match (last, p.total) {
            (true, Some(_)) => return Err(Refuse::Datagram),
            (true, None) if furthest > end => return Err(Refuse::Datagram),
            (false, Some(total)) if end > total => return Err(Refuse::Datagram),
            (true, None) => p.total = Some(end),
            _ => {}
        }
        if end > p.data.len() {
            let grow = end - p.data.len();
            if self.held + grow > self.limits.memory {
                return Err(Refuse::Datagram);
            }
            self.held += grow;
            p.data.resize(end, 0);
        }
        p.data[start..end].copy_from_slice(payload);
        p.have.insert(at, (start, end));
        p.received += payload.len();
        if start == 0 {
            p.header = Some((*ip, header.to_vec(), mac));
        }
        Ok(p.total == Some(p.received) && p.header.is_some())
    }

    fn remove(&mut self, key: &Key) -> Option<Pending> {
        let p = self.table.remove(key)?;
        self.held -= p.data.len();
        Some(p)
    }

    /// Drops the datagrams that have waited longer than the timeout; those
    /// whose first fragment came go to `out`.
    pub(super) fn expire(&mut self, now: Instant, stats: &mut StackStats, out: &mut Vec<Expired>) {
        while let Some(&(started, key)) = self.order.front() {
            if now.saturating_duration_since(started) < self.limits.timeout {
                break;
            }
            self.order.pop_front();
            // The key may be complete and gone, or in use again by a
            // later datagram (its own entry is further back).
            if self.table.get(&key).is_some_and(|p| p.started == started)
                && let Some(p) = self.remove(&key)
            {
                stats.reassembly_timeouts += 1;
                if let Some((ip, header, mac)) = p.header {
                    let first = p.data[..p.data.len().min(8)].to_vec();
                    out.push(Expired {
                        mac,
                        ip,
                        header,
                        first,
                    });
                }
            }
        }
        if self.table.is_empty() {
            self.order.clear();
        }
    }
}

/// The payload bytes each fragment of a datagram carries over `mtu`:
/// the largest multiple of 8 that fits after a 20-byte header.
pub(super) fn fragment_size(mtu: usize) -> usize {
    (mtu - 20) & !7
}

/// A fragment's header from `src` to `dst`: `(ident, offset, more)` and
/// `len` bytes of payload, DF clear.
#[cfg(test)]
pub(super) fn fragment_repr(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: crate::wire::IpProtocol,
    (ident, offset, more): (u16, usize, bool),
    len: usize,
) -> Ipv4Repr {
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len: len,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident,
        dont_frag: false,
        more_frags: more,
        frag_offset: offset as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpProtocol;

    fn repr(ident: u16, offset: usize, len: usize, more: bool) -> Ipv4Repr {
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        fragment_repr(src, dst, IpProtocol::UDP, (ident, offset, more), len)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    struct Table {
        r: Reassembly,
        stats: StackStats,
        now: Instant,
    }

    impl Table {
        fn new(limits: ReassemblyLimits) -> Self {
            Table {
                r: Reassembly::new(limits),
                stats: StackStats::default(),
                now: Instant::now(),
            }
        }

        /// Offers `data[range]` of datagram `ident` (`more` unless it
        /// reaches `data`'s end).
        fn offer(&mut self, ident: u16, data: &[u8], start: usize, end: usize) -> Option<Datagram> {
            let ip = repr(ident, start, end - start, end < data.len());
            self.r.add(
                self.now,
                EthernetAddress([2, 0, 0, 0, 0, 9]),
                &ip,
                &[0x45; 20],
                &data[start..end],
                &mut self.stats,
            )
        }
    }

    #[test]
    fn fragments_in_any_order_make_the_datagram() {
        let data = pattern(4000);
        let cuts = [(0, 1480), (1480, 2960), (2960, 4000)];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let mut t = Table::new(ReassemblyLimits::default());
            let mut whole = None;
            for (n, &i) in order.iter().enumerate() {
                let (s, e) = cuts[i];
                let got = t.offer(9, &data, s, e);
                assert_eq!(got.is_some(), n == 2, "order {order:?} step {n}");
                whole = whole.or(got);
            }
            let d = whole.expect("the datagram");
            assert_eq!(d.payload, data);
            assert_eq!(d.ip.payload_len, 4000);
            assert!(!d.ip.more_frags && d.ip.frag_offset == 0);
            assert_eq!(d.header, vec![0x45; 20]);
            assert_eq!((t.r.pending(), t.r.held), (0, 0));
            assert_eq!(t.stats.reassembled, 1);
        }
    }

    #[test]
    fn interleaved_datagrams_stay_apart() {
        let (a, b) = (
            pattern(3000),
            pattern(2000).into_iter().rev().collect::<Vec<_>>(),
        );
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &a, 1480, 3000).is_none());
        assert!(t.offer(2, &b, 0, 1480).is_none());
        assert_eq!(t.offer(1, &a, 0, 1480).expect("a").payload, a);
        assert_eq!(t.offer(2, &b, 1480, 2000).expect("b").payload, b);
    }

    #[test]
    fn an_exact_duplicate_is_ignored_and_an_overlap_drops_the_datagram() {
        let data = pattern(3000);
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &data, 0, 1480).is_none());
        assert!(t.offer(1, &data, 0, 1480).is_none());
        assert_eq!(t.stats.reassembly_dropped, 0);
        assert_eq!(t.offer(1, &data, 1480, 3000).expect("whole").payload, data);

        // An overlap, from either side, drops what was held.
        for (first, second) in [((0, 1480), (1472, 3000)), ((1480, 3000), (8, 1488))] {
            let mut t = Table::new(ReassemblyLimits::default());
            assert!(t.offer(2, &data, first.0, first.1).is_none());
            assert!(t.offer(2, &data, second.0, second.1).is_none());
            assert_eq!(t.stats.reassembly_dropped, 1);
            assert_eq!((t.r.pending(), t.r.held), (0, 0));
            // A later fragment starts afresh and does not complete it.
            assert!(t.offer(2, &data, 1480, 3000).is_none());
            assert_eq!(t.r.pending(), 1);
        }
    }

    #[test]
    fn the_ends_must_agree() {
        let data = pattern(3000);
        // Two last fragments with different ends.
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &data, 2960, 3000).is_none());
        assert!(t.offer(1, &data[..2000], 1480, 2000).is_none());
        assert_eq!(t.stats.reassembly_dropped, 1);
        // A last fragment ending before bytes already held.
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &data, 1480, 2960).is_none());
        assert!(t.offer(1, &data[..1000], 8, 1000).is_none());
        assert_eq!(t.stats.reassembly_dropped, 1);
        // Bytes beyond the last fragment's end, after it.
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &data[..2000], 1480, 2000).is_none());
        assert!(t.offer(1, &data, 2000, 2960).is_none());
        assert_eq!((t.stats.reassembly_dropped, t.r.pending()), (1, 0));
        // A middle fragment not a multiple of 8: only it is refused.
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &data, 0, 1480).is_none());
        assert!(t.offer(1, &data, 1480, 1485).is_none());
        assert_eq!((t.stats.reassembly_dropped, t.r.pending()), (1, 1));
        assert_eq!(t.offer(1, &data, 1480, 3000).expect("whole").payload, data);
    }

    #[test]
    fn a_datagram_past_64_kib_is_dropped() {
        // The ping of death: the last fragment at the highest offset.
        let data = pattern(65_528 + 100);
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &data, 0, 1480).is_none());
        assert!(t.offer(1, &data, 65_528, 65_628).is_none());
        assert_eq!(t.stats.reassembly_dropped, 1);
        assert_eq!((t.r.pending(), t.r.held), (0, 0));
    }

    #[test]
    fn memory_and_time_are_bounded() {
        let data = pattern(60_000);
        let limits = ReassemblyLimits {
            timeout: Duration::from_secs(30),
            memory: 100_000,
        };
        let mut t = Table::new(limits);
        // The first holds 60,000 bytes (its fragment sits at the end).
        assert!(t.offer(1, &data, 58_520, 60_000).is_none());
        // A second would pass the bound when it grows: dropped.
        assert!(t.offer(2, &data, 58_520, 60_000).is_none());
        assert_eq!(t.stats.reassembly_dropped, 1);
        assert_eq!(t.r.pending(), 1);
        assert!(t.r.held <= limits.memory);
        // Not yet expired, then expired; its first fragment never came,
        // so nothing to tell its sender.
        let mut gone = Vec::new();
        t.r.expire(t.now + Duration::from_secs(29), &mut t.stats, &mut gone);
        assert_eq!(t.r.pending(), 1);
        t.r.expire(t.now + Duration::from_secs(30), &mut t.stats, &mut gone);
        assert_eq!((t.r.pending(), t.r.held), (0, 0));
        assert_eq!(t.stats.reassembly_timeouts, 1);
        assert!(gone.is_empty());
        // One whose first fragment came is handed back for the ICMP
        // message: its header and first eight bytes.
        assert!(t.offer(3, &data, 0, 1480).is_none());
        t.r.expire(t.now + Duration::from_secs(30), &mut t.stats, &mut gone);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].header.len(), &gone[0].first[..]), (20, &data[..8]));
        assert_eq!(gone[0].ip.ident, 3);
        // No memory: every fragment refused.
        let mut t = Table::new(ReassemblyLimits {
            memory: 0,
            ..limits
        });
        assert!(t.offer(1, &data, 0, 1480).is_none());
        assert_eq!((t.stats.reassembly_dropped, t.r.pending()), (1, 0));
    }

    #[test]
    fn the_expiry_queue_stays_bounded_while_a_datagram_waits() {
        let data = pattern(3000);
        let mut t = Table::new(ReassemblyLimits::default());
        // One datagram waits for the whole run.
        assert!(t.offer(0, &data, 0, 1480).is_none());
        for ident in 1..=20_000u16 {
            assert!(t.offer(ident, &data, 1480, 3000).is_none());
            assert!(t.offer(ident, &data, 0, 1480).is_some());
        }
        assert_eq!(t.r.pending(), 1);
        assert!(t.r.order.len() <= ORDER_SWEEP + 1, "{}", t.r.order.len());
        // The waiting one still expires on time.
        t.r.expire(
            t.now + Duration::from_secs(30),
            &mut t.stats,
            &mut Vec::new(),
        );
        assert_eq!((t.r.pending(), t.stats.reassembly_timeouts), (0, 1));
    }

    #[test]
    fn a_reused_identification_after_expiry_is_a_new_datagram() {
        let data = pattern(3000);
        let mut t = Table::new(ReassemblyLimits::default());
        assert!(t.offer(1, &data, 0, 1480).is_none());
        t.now += Duration::from_secs(20);
        t.r.expire(t.now, &mut t.stats, &mut Vec::new());
        // The first is complete; the same key starts again later.
        assert!(t.offer(1, &data, 1480, 3000).is_some());
        assert!(t.offer(1, &data, 0, 1480).is_none());
        t.now += Duration::from_secs(15);
        // The old order entry (35 s) is past; the new one (15 s) is not.
        t.r.expire(t.now, &mut t.stats, &mut Vec::new());
        assert_eq!((t.r.pending(), t.stats.reassembly_timeouts), (1, 0));
    }

    #[test]
    fn fragment_sizes_are_multiples_of_eight() {
        assert_eq!(fragment_size(1500), 1480);
        assert_eq!(fragment_size(576), 552);
        assert_eq!(fragment_size(1006), 984);
    }
}
