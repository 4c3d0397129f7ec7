//! One TCP connection's state machine (RFC 9293), with its buffers,
//! retransmission timer (RFC 6298), congestion control (RFC 5681 with
//! NewReno's recovery, RFC 6582), delayed acknowledgments (RFC 1122
//! section 4.2.3.2), zero-window probing and TIME-WAIT.
//!
//! Everything here is a function of the connection's state, the segment
//! or call, and the time passed in: no clock is read and nothing is sent.
//! [`Tcb::input`] takes an arriving segment, [`Tcb::on_timer`] a deadline
//! that passed, the application's calls change the buffers, and
//! [`Tcb::output`] then says which segments to send (their payload is a
//! range of the send buffer). The stack around it finds the connection,
//! builds the frames and keeps the timers, and the fuzz target drives it
//! with arbitrary segments and checks the invariants ([`Tcb::check`]).
//!
//! Timestamps (RFC 7323 section 3) are never offered, so a peer's
//! timestamps option is ignored and it sends none. SACK (RFC 2018) is
//! offered and accepted only with `Params::sack`: then ACKs sent while
//! data waits beyond a hole carry SACK blocks (the range holding the
//! latest segment first, RFC 2018 section 4), and segments with payload
//! carry none, so their size never shrinks. The blocks the peer sends
//! keep a scoreboard of what it holds above SND.UNA, and a loss recovery
//! begun while it holds anything is RFC 6675's: the holes with enough
//! SACKed above them count as lost, the estimate of what is still in
//! flight (the pipe) governs sending instead of an inflated window, and
//! every lost hole is sent again in the first round trip, where
//! NewReno's recovery (the fallback, RFC 6582) mends one hole a round
//! trip. A partial acknowledgment still resends the segment at SND.UNA if
//! the scoreboard has not, so a loss near the end of a transfer, with too
//! little SACKed above it to count as lost, waits for no timeout. A
//! timeout forgets the scoreboard (RFC 2018 section 8: the receiver may
//! have discarded what it SACKed).
//!
//! With SACK, a tail loss probe (RFC 8985 section 7, as Linux sends it
//! only with SACK) answers a loss at the end of a flight, which draws no
//! duplicate ACKs: two smoothed round trips after the last send with no
//! ACK, and before the retransmission timer, one segment goes (new data
//! if the windows allow, else the last segment again). If the probe
//! arrives beyond holes, the peer's SACK for it marks every hole below as
//! lost and the recovery above mends them all; if only the last segment
//! was lost, the probe's ACK ends it. Either way no timeout, no collapse
//! of the window to one segment. Without RACK's clock the holes a probe
//! shows are all taken as lost, which is what RACK concludes here too:
//! they were sent before the probe that arrived.

use super::rxbuf::RxBuf;
use crate::transport::CloseReason;
use crate::wire::{SackBlocks, TcpFlags};
use hugepages::mbuf::Mbuf;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A sequence number, compared modulo 2^32 (RFC 9293 section 3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub(crate) struct Seq(pub(crate) u32);

impl Seq {
    pub(crate) fn add(self, n: usize) -> Seq {
        Seq(self.0.wrapping_add(n as u32))
    }

    /// `self - earlier` as a distance; zero if `earlier` is after `self`.
    pub(crate) fn since(self, earlier: Seq) -> usize {
        let d = self.0.wrapping_sub(earlier.0) as i32;
        d.max(0) as usize
    }

    pub(crate) fn lt(self, other: Seq) -> bool {
        (self.0.wrapping_sub(other.0) as i32) < 0
    }

    pub(crate) fn le(self, other: Seq) -> bool {
        (self.0.wrapping_sub(other.0) as i32) <= 0
    }

    pub(crate) fn gt(self, other: Seq) -> bool {
        other.lt(self)
    }

    pub(crate) fn ge(self, other: Seq) -> bool {
        other.le(self)
    }
}

/// The connection states of RFC 9293 section 3.3.2 (LISTEN is the
/// stack's listener, not a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING-KEBAB-CASE")]
pub enum TcpState {
    /// Our SYN is sent; waiting for the peer's.
    SynSent,
    /// A SYN arrived and our SYN-ACK is sent; waiting for its ACK.
    SynReceived,
    /// Open both ways.
    Established,
    /// We closed; our FIN is not yet acknowledged.
    FinWait1,
    /// Our FIN is acknowledged; waiting for the peer's.
    FinWait2,
    /// The peer closed; we may still send.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Both closed; old duplicates of the connection die out.
    TimeWait,
    /// Gone.
    Closed,
}

impl TcpState {
    /// Whether both sides' initial sequence numbers are known.
    pub(crate) fn synchronized(self) -> bool {
        !matches!(
            self,
            TcpState::SynSent | TcpState::SynReceived | TcpState::Closed
        )
    }
}

/// What a connection is allowed: the stack's configuration, per connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// The MSS we announce: the largest segment we can receive.
    pub(crate) mss: u16,
    pub(crate) rx_buffer: usize,
    pub(crate) tx_buffer: usize,
    pub(crate) time_wait: Duration,
    pub(crate) fin_timeout: Duration,
    /// A connect not established after this long fails.
    pub(crate) connect_timeout: Duration,
    /// A closed connection whose bytes and FIN are not acknowledged after
    /// this long is reset.
    pub(crate) close_timeout: Duration,
    pub(crate) delayed_ack: Duration,
    pub(crate) rto_min: Duration,
    pub(crate) rto_max: Duration,
    pub(crate) rto_initial: Duration,
    pub(crate) syn_retries: u32,
    pub(crate) retries: u32,
    /// Keep-alive (RFC 9293 section 3.8.4, RFC 1122 section 4.2.3.6):
    /// after this long with nothing received, probe every `interval`, and
    /// give up after `probes` unanswered.
    pub(crate) keepalive: Option<KeepAlive>,
    /// Offer and accept SACK-permitted, and send SACK blocks.
    pub(crate) sack: bool,
    /// An established connection with no byte either way (none received,
    /// sent for the first time or acknowledged) for this long is reset
    /// and ends with `TimedOut` (`Transport`'s `idle_timeout`).
    pub(crate) idle_timeout: Option<Duration>,
}

/// When an idle connection is probed, and when it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Idle time before the first probe (Linux: `tcp_keepalive_time`,
    /// 2 hours).
    pub idle: Duration,
    /// Between probes (`tcp_keepalive_intvl`, 75 s).
    pub interval: Duration,
    /// Unanswered probes before the connection times out
    /// (`tcp_keepalive_probes`, 9).
    pub probes: u32,
}

/// An arriving segment, parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegIn<'a> {
    pub(crate) seq: Seq,
    pub(crate) ack: Seq,
    pub(crate) flags: TcpFlags,
    pub(crate) window: u16,
    pub(crate) mss: Option<u16>,
    pub(crate) wscale: Option<u8>,
    /// The SACK-permitted option (a SYN's).
    pub(crate) sack_permitted: bool,
    /// SACK blocks (RFC 2018).
    pub(crate) sack: SackBlocks,
    pub(crate) payload: &'a [u8],
    /// The payload is in an rx mbuf that the stack hands over if the
    /// receive buffer keeps it (see [`Tcb::awaits_frame`]).
    pub(crate) lendable: bool,
}

impl SegIn<'_> {
    /// SEG.LEN: the sequence space the segment occupies.
    fn len(&self) -> usize {
        self.payload.len()
            + usize::from(self.flags.contains(TcpFlags::SYN))
            + usize::from(self.flags.contains(TcpFlags::FIN))
    }
}

/// A segment to send. Its payload is `len` bytes of the send buffer from
/// `at` (see [`Tcb::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegOut {
    pub(crate) seq: Seq,
    pub(crate) ack: Seq,
    pub(crate) flags: TcpFlags,
    pub(crate) window: u16,
    pub(crate) mss: Option<u16>,
    pub(crate) wscale: Option<u8>,
    /// The SACK-permitted option (a SYN's).
    pub(crate) sack_permitted: bool,
    /// SACK blocks (an ACK's, while data is held beyond a hole).
    pub(crate) sack: SackBlocks,
    pub(crate) at: usize,
    pub(crate) len: usize,
}

/// What changed for the application since the stack last looked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Notes {
    /// Bytes that became readable (in order).
    pub(crate) received: usize,
    pub(crate) established: bool,
    pub(crate) readable: bool,
    pub(crate) writable: bool,
    pub(crate) peer_closed: bool,
    pub(crate) closed: Option<CloseReason>,
}

/// The smallest segment a "fragmentation needed" message shrinks a
/// connection's to: Linux's `min_pmtu` (552) less the headers, so a forged
/// tiny MTU cannot make a connection crawl.
pub(crate) const MIN_PATH_MSS: usize = 512;

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TcpCounters {
    /// Bytes received in order.
    pub rx_bytes: u64,
    /// Bytes sent and acknowledged.
    pub tx_bytes: u64,
    /// Segments sent again after the retransmission timer ran out.
    pub timeout_retransmits: u64,
    /// Segments sent again on three duplicate ACKs or a partial ACK.
    pub fast_retransmits: u64,
    /// Times the segment size shrank to a smaller path MTU (ICMP
    /// "fragmentation needed").
    pub path_mtu_drops: u64,
    /// Duplicate ACKs received.
    pub dup_acks: u64,
    /// Segments that arrived ahead of a hole.
    pub out_of_order: u64,
    /// Segments outside the receive window (answered with an ACK).
    pub out_of_window: u64,
    /// Challenge ACKs sent for an in-window RST or a SYN (RFC 5961).
    pub challenge_acks: u64,
    /// Zero-window probes sent.
    pub window_probes: u64,
    /// Keep-alive probes sent.
    pub keepalive_probes: u64,
    /// ACKs sent with SACK blocks (RFC 2018).
    pub sack_acks: u64,
    /// Holes the peer's SACK blocks showed, sent again in a recovery
    /// (RFC 6675; counted in `fast_retransmits` too).
    pub sack_retransmits: u64,
    /// Tail loss probes sent (RFC 8985 section 7).
    pub loss_probes: u64,
    /// Segments whose payload the application read in place, in the rx
    /// mbuf that carried it (no copy).
    pub rx_in_place: u64,
    /// Of those, segments copied after all: bytes left unconsumed at the
    /// next pass, or more bytes arriving behind them.
    pub rx_in_place_copied: u64,
}

/// The largest window the 16-bit field carries unscaled.
const MAX_WINDOW: usize = 65_535;
/// The largest shift of the window scale option (RFC 7323 section 2.3).
const MAX_WSCALE: u8 = 14;
/// The MSS assumed when the peer sends none (RFC 9293 section 3.7.1).
const DEFAULT_MSS: u32 = 536;
/// Initial window in segments (RFC 6928).
const INITIAL_WINDOW_SEGMENTS: u32 = 10;
/// Duplicate ACKs that start a fast retransmit (RFC 5681 section 3.2).
const DUPACK_THRESHOLD: u32 = 3;
/// A delayed ACK's worst case (RFC 8985's WCDelAckT), added to the
/// probe timeout when one segment is in flight.
const WORST_CASE_DELAYED_ACK: Duration = Duration::from_millis(200);
/// Ranges of the peer's SACK scoreboard kept at most (a receiver reports
/// four at a time; more than this many holes at once, and the highest
/// ranges are forgotten, which only makes the pipe estimate larger).
const MAX_SACKED: usize = 16;
/// Duplicate ACKs one output sends at most (a burst of out-of-order
/// segments in one pass needs no more to start a fast retransmit, and
/// each further one inflates the sender's window by a segment).
const MAX_DUP_ACKS_PER_PASS: u32 = 8;

/// One connection.
#[derive(Debug)]
pub(crate) struct Tcb {
    pub(crate) state: TcpState,
    p: Params,
    // Send sequence space (RFC 9293 section 3.3.1).
    iss: Seq,
    snd_una: Seq,
    snd_nxt: Seq,
    /// The highest sequence number sent (SND.NXT goes back on a timeout).
    snd_max: Seq,
    snd_wnd: usize,
    snd_wl1: Seq,
    snd_wl2: Seq,
    max_snd_wnd: usize,
    snd_shift: u8,
    /// Both SYNs carried the window scale option (RFC 7323 section 2.2).
    wscale_agreed: bool,
    /// Both SYNs carried SACK-permitted: ACKs carry SACK blocks.
    sack_ok: bool,
    /// Where the segments last stored beyond a hole start, the latest
    /// first: the ranges holding them are reported in this order, so the
    /// blocks an ACK has no room for are the ones reported most often
    /// already (RFC 2018 section 4, as Linux keeps them).
    recent: [Option<Seq>; 4],
    /// A duplicate segment's range, reported first in the next ACK (a
    /// D-SACK, RFC 2883), so the sender can tell its retransmission was
    /// not needed.
    dsack: Option<(Seq, Seq)>,
    /// The peer's MSS, less nothing: data segments carry no options.
    smss: usize,
    /// Bytes not yet acknowledged, from `tx_seq` on.
    tx: VecDeque<u8>,
    /// The sequence number of `tx[0]`.
    tx_seq: Seq,
    /// The application is done sending: FIN follows the buffered bytes.
    fin_queued: bool,
    // Receive sequence space.
    irs: Seq,
    rcv_nxt: Seq,
    rcv_shift: u8,
    /// The right edge of the window last advertised; never moves left.
    rcv_adv: Seq,
    rx: RxBuf,
    /// Where the peer's FIN sits, once seen (it may arrive out of order).
    fin_at: Option<Seq>,
    // Congestion control.
    cwnd: usize,
    ssthresh: usize,
    dupacks: u32,
    /// Limited Transmit's allowance beyond the congestion window (RFC
    /// 3042): a segment for each of the first two duplicate ACKs.
    limited: usize,
    recover: Seq,
    in_recovery: bool,
    /// The recovery under way is RFC 6675's, driven by the scoreboard.
    sack_recovery: bool,
    /// The peer's SACK scoreboard: the ranges above SND.UNA it reported
    /// holding, sorted and disjoint, within SND.UNA..SND.MAX.
    sacked: Vec<(Seq, Seq)>,
    /// HighRxt (RFC 6675): the end of what this recovery sent again.
    high_rxt: Seq,
    /// SND.MAX when this recovery last sent a hole again: data SACKed
    /// beyond it was sent after that copy, so a hole still open below
    /// HighRxt lost its copy too.
    rxt_mark: Option<Seq>,
    /// Every hole below this is lost, whatever is SACKed above it (a tail
    /// loss probe arrived beyond them).
    lost_to: Seq,
    /// When a tail loss probe goes, if nothing is acknowledged first.
    tlp_at: Option<Instant>,
    /// SND.MAX once the probe went: one probe until it is acknowledged.
    tlp_out: Option<Seq>,
    /// The probe's time came: send it in the next output.
    tlp_now: bool,
    /// Resend the segment at SND.UNA before anything new.
    retransmit_una: bool,
    // Round-trip time (RFC 6298).
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    rtt_sample: Option<(Seq, Instant)>,
    retries: u32,
    // Timers.
    rto_at: Option<Instant>,
    ack_at: Option<Instant>,
    persist_at: Option<Instant>,
    persist_backoff: u32,
    probe_now: bool,
    /// TIME-WAIT's end, or FIN-WAIT-2's after a close.
    end_at: Option<Instant>,
    /// The next keep-alive probe, and how many went unanswered.
    keepalive_at: Option<Instant>,
    /// When the connection will have been idle for `idle_timeout`.
    idle_at: Option<Instant>,
    keepalive_sent: u32,
    keepalive_probe: bool,
    ack_now: bool,
    /// Duplicate ACKs owed: one per segment that arrived out of order
    /// (RFC 5681 section 4.2), sent as separate segments so that the
    /// sender counts them.
    dup_acks_owed: u32,
    unacked_segments: u32,
    /// The last write took less than it was given.
    want_writable: bool,
    /// The application closed (not only shut down) the connection.
    pub(crate) app_closed: bool,
    /// A reset to send: its sequence number and, if any, acknowledgment.
    pub(crate) rst: Option<(Seq, Option<Seq>)>,
    pub(crate) notes: Notes,
    pub(crate) counters: TcpCounters,
}

impl Tcb {
    fn new(p: Params, iss: Seq, state: TcpState, now: Instant) -> Tcb {
        let _ = now;
        let rcv_shift = wscale_for(p.rx_buffer);
        Tcb {
            state,
            p,
            iss,
            snd_una: iss,
            snd_nxt: iss,
            snd_max: iss,
            snd_wnd: 0,
            snd_wl1: Seq(0),
            snd_wl2: iss,
            max_snd_wnd: 0,
            snd_shift: 0,
            wscale_agreed: false,
            sack_ok: false,
            recent: [None; 4],
            dsack: None,
            smss: DEFAULT_MSS as usize,
            tx: VecDeque::new(),
            tx_seq: iss.add(1),
            fin_queued: false,
            irs: Seq(0),
            rcv_nxt: Seq(0),
            rcv_shift,
            rcv_adv: Seq(0),
            rx: RxBuf::new(p.rx_buffer),
            fin_at: None,
            cwnd: 0,
            ssthresh: usize::MAX / 2,
            dupacks: 0,
            limited: 0,
            recover: iss,
            in_recovery: false,
            sack_recovery: false,
            sacked: Vec::new(),
            high_rxt: iss,
            rxt_mark: None,
            lost_to: iss,
            tlp_at: None,
            tlp_out: None,
            tlp_now: false,
            retransmit_una: false,
            srtt: None,
            rttvar: Duration::ZERO,
            rto: p.rto_initial,
            rtt_sample: None,
            retries: 0,
            rto_at: None,
            ack_at: None,
            persist_at: None,
            persist_backoff: 0,
            probe_now: false,
            end_at: None,
            keepalive_at: None,
            idle_at: None,
            keepalive_sent: 0,
            keepalive_probe: false,
            ack_now: false,
            dup_acks_owed: 0,
            unacked_segments: 0,
            want_writable: false,
            app_closed: false,
            rst: None,
            notes: Notes::default(),
            counters: TcpCounters::default(),
        }
    }

    /// An active open: SYN-SENT, the SYN goes out at the next output.
    pub(crate) fn connect(p: Params, iss: Seq, now: Instant) -> Tcb {
        let mut t = Tcb::new(p, iss, TcpState::SynSent, now);
        t.end_at = Some(now + p.connect_timeout);
        t
    }

    /// A passive open from a listener's SYN: SYN-RECEIVED (RFC 9293
    /// section 3.10.7.2), the SYN-ACK goes out at the next output.
    pub(crate) fn accept(p: Params, iss: Seq, syn: &SegIn<'_>, now: Instant) -> Tcb {
        let mut t = Tcb::new(p, iss, TcpState::SynReceived, now);
        t.take_syn(syn);
        t
    }

    /// Records the peer's SYN: its sequence number, window and options.
    fn take_syn(&mut self, syn: &SegIn<'_>) {
        self.irs = syn.seq;
        self.rcv_nxt = syn.seq.add(1);
        // What our SYN (or the SYN-ACK to come) announces, unscaled.
        self.rcv_adv = self.rcv_nxt.add(self.rx.free().min(MAX_WINDOW));
        // Window scaling only if both sides send the option (RFC 7323
        // section 2.2); the SYN's own window is never scaled.
        match syn.wscale {
            Some(shift) => {
                self.snd_shift = shift.min(MAX_WSCALE);
                self.wscale_agreed = true;
            }
            None => {
                self.snd_shift = 0;
                self.rcv_shift = 0;
            }
        }
        // SACK only if both sides send SACK-permitted (RFC 2018 section 2).
        self.sack_ok = self.p.sack && syn.sack_permitted;
        self.smss = syn.mss.map_or(DEFAULT_MSS, u32::from).max(64) as usize;
        self.smss = self.smss.min(usize::from(self.p.mss));
        self.snd_wnd = usize::from(syn.window);
        self.max_snd_wnd = self.snd_wnd;
        self.snd_wl1 = syn.seq;
        // RFC 5681 section 3.1 with RFC 6928's initial window.
        self.cwnd = INITIAL_WINDOW_SEGMENTS as usize * self.smss;
    }

    // ---- the application's side ----

    /// The bytes received in order and not consumed.
    pub(crate) fn peek(&self) -> &[u8] {
        self.rx.bytes()
    }

    /// Whether the last segment's payload was counted as received to be
    /// read in place: the stack must [`attach`](Self::attach) its mbuf
    /// before anything else touches the connection.
    pub(crate) fn awaits_frame(&self) -> bool {
        self.rx.awaits_frame()
    }

    /// Hands over the rx mbuf whose payload (from `at` in its data) the
    /// last segment lent. Should the mbuf not hold it (the stack computes
    /// `at` from the same frame, so it does), the bytes counted are lost
    /// before any ACK for them left: the connection is reset rather than
    /// go on with a hole in the stream.
    pub(crate) fn attach(&mut self, m: Mbuf, at: usize) {
        if !self.rx.attach(m, at) {
            self.abort(CloseReason::Aborted);
        }
    }

    /// Copies bytes still read in place into the receive buffer and gives
    /// their mbuf back (the stack does it at the start of each pass).
    pub(crate) fn settle(&mut self) {
        if self.rx.settle() {
            self.counters.rx_in_place_copied += 1;
        }
    }

    /// Drops `n` received bytes; the window reopens.
    pub(crate) fn consume(&mut self, n: usize) {
        let was_zero = self.rcv_adv.le(self.rcv_nxt);
        self.rx.consume(n);
        // Receiver-side silly window avoidance (RFC 9293 section
        // 3.8.6.2.2): announce the larger window once it has grown by
        // min(half the buffer, one MSS), or at once if it was shut.
        let edge = self.rcv_nxt.add(self.rx.free());
        let grown = edge.since(self.rcv_adv);
        let step = (self.rx.capacity() / 2).min(usize::from(self.p.mss));
        if self.state.synchronized() && (grown >= step || (was_zero && grown > 0)) {
            self.ack_now = true;
        }
    }

    /// Copies as much of `data` into the send buffer as it has room for.
    pub(crate) fn write(&mut self, data: &[u8]) -> usize {
        if self.fin_queued
            || !matches!(
                self.state,
                TcpState::SynSent
                    | TcpState::SynReceived
                    | TcpState::Established
                    | TcpState::CloseWait
            )
        {
            return 0;
        }
        let n = data.len().min(self.p.tx_buffer - self.tx.len());
        self.tx.extend(&data[..n]);
        if n < data.len() {
            self.want_writable = true;
        }
        n
    }

    /// Room in the send buffer (none once the sending side is shut).
    pub(crate) fn send_room(&self) -> usize {
        if self.fin_queued {
            0
        } else {
            self.p.tx_buffer - self.tx.len()
        }
    }

    /// The sending side is shut: FIN is queued or sent.
    pub(crate) fn is_shut(&self) -> bool {
        self.fin_queued
    }

    /// The peer's FIN has arrived (no byte follows those buffered).
    pub(crate) fn peer_closed(&self) -> bool {
        matches!(
            self.state,
            TcpState::CloseWait | TcpState::LastAck | TcpState::Closing | TcpState::TimeWait
        )
    }

    /// Bytes in the send buffer (sent and not acknowledged, or not sent).
    pub(crate) fn tx_buffered(&self) -> usize {
        self.tx.len()
    }

    pub(crate) fn rx_buffered(&self) -> usize {
        self.rx.len()
    }

    /// The two pieces of the send buffer's bytes `at..at + len`.
    pub(crate) fn payload(&self, at: usize, len: usize) -> (&[u8], &[u8]) {
        let (a, b) = self.tx.as_slices();
        let end = at + len;
        if end <= a.len() {
            (&a[at..end], &[])
        } else if at >= a.len() {
            (&b[at - a.len()..end - a.len()], &[])
        } else {
            (&a[at..], &b[..end - a.len()])
        }
    }

    /// The application is done sending: FIN after the buffered bytes
    /// (RFC 9293 section 3.10.4).
    pub(crate) fn shutdown(&mut self) {
        if self.fin_queued {
            return;
        }
        match self.state {
            TcpState::SynSent => self.close_with(CloseReason::Local),
            TcpState::SynReceived | TcpState::Established => {
                self.fin_queued = true;
                self.state = TcpState::FinWait1;
            }
            TcpState::CloseWait => {
                self.fin_queued = true;
                self.state = TcpState::LastAck;
            }
            _ => {}
        }
    }

    /// The application is done with the connection. Unread bytes make it
    /// a reset (RFC 2525 section 2.17, as Linux does).
    pub(crate) fn close(&mut self, now: Instant) {
        self.app_closed = true;
        if self.rx.len() > 0 && self.state.synchronized() {
            self.abort(CloseReason::Aborted);
            return;
        }
        self.shutdown();
        // A peer that never acknowledges (a window shut for good) cannot
        // hold the connection: reset it after the close timeout.
        if matches!(
            self.state,
            TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck
        ) && self.end_at.is_none()
        {
            self.end_at = Some(now + self.p.close_timeout);
        }
    }

    /// Resets the connection now (RFC 9293 section 3.10.4, ABORT).
    pub(crate) fn abort(&mut self, reason: CloseReason) {
        if self.state.synchronized() || self.state == TcpState::SynReceived {
            // A sequence number the peer accepts (RFC 5961 takes only
            // RCV.NXT exactly): SND.NXT, unless that lies past the peer's
            // window (after a zero-window probe), then the window's edge,
            // as Linux's tcp_acceptable_seq.
            let edge = self.snd_una.add(self.snd_wnd);
            let seq = if self.snd_nxt.le(edge) {
                self.snd_nxt
            } else {
                edge
            };
            self.rst = Some((seq, None));
        }
        self.close_with(reason);
    }

    /// A byte moved (or the connection was just established): the idle
    /// clock starts again.
    fn active(&mut self, now: Instant) {
        if let Some(idle) = self.p.idle_timeout
            && self.state.synchronized()
            && self.state != TcpState::TimeWait
        {
            self.idle_at = Some(now + idle);
        }
    }

    /// Starts (again) the wait before the first keep-alive probe.
    fn arm_keepalive(&mut self, now: Instant) {
        if let Some(ka) = self.p.keepalive
            && matches!(
                self.state,
                TcpState::Established
                    | TcpState::CloseWait
                    | TcpState::FinWait1
                    | TcpState::FinWait2
            )
        {
            self.keepalive_sent = 0;
            self.keepalive_at = Some(now + ka.idle);
        }
    }

    /// An ICMP destination-unreachable message quoting `seq`: a
    /// connection still opening ends with `errno`, if `seq` is one it sent
    /// and has not seen acknowledged (RFC 5927 section 4.1); returns
    /// whether it ended. Established connections treat it as a soft error
    /// (RFC 1122 section 4.2.3.9) and go on.
    pub(crate) fn unreachable(&mut self, seq: Seq, errno: i32) -> bool {
        if self.state != TcpState::SynSent || !(self.snd_una.le(seq) && seq.lt(self.snd_max)) {
            return false;
        }
        self.close_with(CloseReason::ConnectFailed(errno));
        true
    }

    /// ICMP "fragmentation needed" quoting `seq` (RFC 1191): a segment
    /// we sent met a link of `mtu` bytes with DF set. If `seq` is one sent
    /// and not yet acknowledged (RFC 5927) and the MTU is below what the
    /// segments are sized for, they shrink to fit (`mtu - 40`, never below
    /// [`MIN_PATH_MSS`]) and everything unacknowledged goes again at the
    /// new size, without a congestion response (the loss was the path's
    /// size, as Linux's `tcp_simple_retransmit`); returns whether it did.
    pub(crate) fn path_mtu(&mut self, seq: Seq, mtu: u16) -> bool {
        if !(self.state.synchronized() && self.snd_una.le(seq) && seq.lt(self.snd_max)) {
            return false;
        }
        let mss = usize::from(mtu).saturating_sub(40).max(MIN_PATH_MSS);
        if mss >= self.smss {
            return false;
        }
        self.smss = mss;
        self.snd_nxt = self.snd_una;
        self.retransmit_una = false;
        // Everything goes again from SND.UNA: the pipe, which counts up to
        // SND.MAX, no longer says what is in flight.
        self.sack_recovery = false;
        self.sacked.clear();
        self.rtt_sample = None;
        self.counters.path_mtu_drops += 1;
        true
    }

    /// Ends the connection without a segment (its peer was never
    /// reached).
    pub(crate) fn fail(&mut self, reason: CloseReason) {
        self.close_with(reason);
    }

    fn close_with(&mut self, reason: CloseReason) {
        if self.state != TcpState::Closed {
            self.state = TcpState::Closed;
            self.notes.closed = Some(reason);
        }
        self.rto_at = None;
        self.ack_at = None;
        self.persist_at = None;
        self.end_at = None;
        self.keepalive_at = None;
        self.idle_at = None;
    }

    fn enter_time_wait(&mut self, now: Instant) {
        self.state = TcpState::TimeWait;
        self.end_at = Some(now + self.p.time_wait);
        self.rto_at = None;
        self.persist_at = None;
        self.keepalive_at = None;
        self.idle_at = None;
    }

    // ---- arriving segments (RFC 9293 section 3.10.7) ----

    /// Processes one segment for this connection.
    pub(crate) fn input(&mut self, seg: &SegIn<'_>, now: Instant) {
        match self.state {
            TcpState::Closed => {}
            TcpState::SynSent => self.input_syn_sent(seg, now),
            _ => self.input_synchronized(seg, now),
        }
    }

    /// RFC 9293 section 3.10.7.3.
    fn input_syn_sent(&mut self, seg: &SegIn<'_>, now: Instant) {
        let has_ack = seg.flags.contains(TcpFlags::ACK);
        if has_ack && (seg.ack.le(self.iss) || seg.ack.gt(self.snd_max)) {
            if !seg.flags.contains(TcpFlags::RST) {
                self.rst = Some((seg.ack, None));
            }
            return;
        }
        if seg.flags.contains(TcpFlags::RST) {
            if has_ack {
                self.close_with(CloseReason::ConnectFailed(libc::ECONNREFUSED));
            }
            return;
        }
        if !seg.flags.contains(TcpFlags::SYN) {
            return;
        }
        self.take_syn(seg);
        if has_ack {
            self.snd_una = seg.ack;
            self.snd_wl2 = seg.ack;
            self.sample_rtt(seg.ack, now);
            self.rto_at = None;
            self.retries = 0;
            self.state = TcpState::Established;
            self.notes.established = true;
            self.ack_now = true;
            self.end_at = None;
            self.arm_keepalive(now);
            self.active(now);
        } else {
            // Simultaneous open: SYN-RECEIVED, our SYN again with an ACK.
            self.state = TcpState::SynReceived;
            self.snd_nxt = self.iss;
        }
    }

    /// The receive window now: from RCV.NXT to the advertised edge.
    fn rcv_wnd(&self) -> usize {
        self.rcv_adv.since(self.rcv_nxt)
    }

    /// RFC 9293 section 3.10.7.4, with RFC 5961's checks of RST, SYN and
    /// ACK.
    fn input_synchronized(&mut self, seg: &SegIn<'_>, now: Instant) {
        let rst = seg.flags.contains(TcpFlags::RST);
        // A SYN-RECEIVED whose SYN-ACK was lost sees the SYN again.
        if self.state == TcpState::SynReceived
            && seg.flags.contains(TcpFlags::SYN)
            && !seg.flags.contains(TcpFlags::ACK)
            && !rst
        {
            if seg.seq == self.irs {
                self.snd_nxt = self.iss;
            }
            return;
        }
        // First: is the segment acceptable (the table of section 3.10.7.4)?
        let wnd = self.rcv_wnd();
        let len = seg.len();
        let in_window = |s: Seq| s.ge(self.rcv_nxt) && s.lt(self.rcv_nxt.add(wnd));
        let acceptable = match (len, wnd) {
            (0, 0) => seg.seq == self.rcv_nxt,
            (0, _) => in_window(seg.seq),
            (_, 0) => false,
            (_, _) => in_window(seg.seq) || in_window(seg.seq.add(len - 1)),
        };
        if !acceptable {
            if !rst {
                self.counters.out_of_window += 1;
                self.ack_now = true;
                if self.sack_ok && !seg.payload.is_empty() && seg.seq.lt(self.rcv_nxt) {
                    // Data already received: say so (RFC 2883).
                    let end = seg.seq.add(seg.payload.len());
                    let end = if end.lt(self.rcv_nxt) {
                        end
                    } else {
                        self.rcv_nxt
                    };
                    self.dsack = Some((seg.seq, end));
                }
                if self.state == TcpState::TimeWait {
                    self.end_at = Some(now + self.p.time_wait);
                }
            }
            return;
        }
        // The peer is alive: the keep-alive clock starts again.
        self.arm_keepalive(now);
        // Second: RST (RFC 5961 section 3.2): only an exact match resets;
        // one elsewhere in the window gets a challenge ACK.
        if rst {
            if seg.seq == self.rcv_nxt {
                match self.state {
                    TcpState::SynReceived
                    | TcpState::Established
                    | TcpState::FinWait1
                    | TcpState::FinWait2
                    | TcpState::CloseWait => self.close_with(CloseReason::Reset),
                    _ => self.close_with(CloseReason::Local),
                }
            } else {
                self.counters.challenge_acks += 1;
                self.ack_now = true;
            }
            return;
        }
        // Fourth: a SYN in a synchronized state (RFC 5961 section 4.2).
        if seg.flags.contains(TcpFlags::SYN) {
            self.counters.challenge_acks += 1;
            self.ack_now = true;
            return;
        }
        // Fifth: the ACK.
        if !seg.flags.contains(TcpFlags::ACK) {
            return;
        }
        if self.state == TcpState::SynReceived {
            if seg.ack.gt(self.snd_una) && seg.ack.le(self.snd_max) {
                self.state = if self.fin_queued {
                    TcpState::FinWait1
                } else {
                    TcpState::Established
                };
                self.notes.established = true;
                self.arm_keepalive(now);
                self.active(now);
                self.snd_wnd = usize::from(seg.window) << self.snd_shift;
                self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
                self.snd_wl1 = seg.seq;
                self.snd_wl2 = seg.ack;
            } else {
                self.rst = Some((seg.ack, None));
                return;
            }
        }
        // RFC 5961 section 5.2: an ACK must lie in
        // [SND.UNA - MAX.SND.WND, SND.NXT].
        if seg.ack.gt(self.snd_max) {
            self.ack_now = true;
            return;
        }
        if seg
            .ack
            .lt(Seq(self.snd_una.0.wrapping_sub(self.max_snd_wnd as u32)))
        {
            self.counters.challenge_acks += 1;
            self.ack_now = true;
            return;
        }
        let window = usize::from(seg.window) << self.snd_shift;
        let sacked_more = self.take_sack(&seg.sack);
        if seg.ack.gt(self.snd_una) {
            self.ack_new(seg.ack, now);
        } else if seg.ack == self.snd_una
            && seg.payload.is_empty()
            && !seg.flags.contains(TcpFlags::FIN)
            && (window == self.snd_wnd || sacked_more)
            && self.snd_max.gt(self.snd_una)
        {
            // A duplicate: the same window (RFC 5681 section 2), or, with
            // SACK, blocks that tell of more data held (RFC 6675 section
            // 2), since a receiver that grows its buffer as data comes
            // (Linux does) changes the window in most of its duplicates.
            self.dup_ack();
        }
        // Window update (RFC 9293 section 3.10.7.4, SND.WL1 and SND.WL2).
        if self.snd_wl1.lt(seg.seq) || (self.snd_wl1 == seg.seq && self.snd_wl2.le(seg.ack)) {
            if window > 0 && self.snd_wnd == 0 {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
            if window == 0 {
                // The peer answered; a closed window is not a dead peer.
                self.retries = 0;
            }
            self.snd_wnd = window;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
            self.snd_wl1 = seg.seq;
            self.snd_wl2 = seg.ack;
        }
        let fin_acked = self.fin_queued && self.snd_una == self.fin_seq().add(1);
        match self.state {
            TcpState::FinWait1 if fin_acked => {
                self.state = TcpState::FinWait2;
                if self.app_closed {
                    self.end_at = Some(now + self.p.fin_timeout);
                }
            }
            TcpState::Closing if fin_acked => self.enter_time_wait(now),
            TcpState::LastAck if fin_acked => {
                self.close_with(CloseReason::Local);
                return;
            }
            TcpState::TimeWait => {
                // A retransmitted FIN: acknowledge it and restart the wait.
                if seg.flags.contains(TcpFlags::FIN) {
                    self.ack_now = true;
                    self.end_at = Some(now + self.p.time_wait);
                }
                return;
            }
            _ => {}
        }
        // Seventh: the text.
        let mut data = seg.payload;
        let mut seq = seg.seq;
        if seq.lt(self.rcv_nxt) {
            let skip = self.rcv_nxt.since(seq).min(data.len());
            data = &data[skip..];
            seq = seq.add(skip);
        }
        if !data.is_empty() {
            match self.state {
                TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2 => {
                    if self.app_closed {
                        // Nobody will read it (RFC 9293 section 3.10.7.4's
                        // note on CLOSE, and Linux): reset.
                        self.abort(CloseReason::Aborted);
                        return;
                    }
                    let lend = seg.lendable.then(|| seq.since(seg.seq));
                    self.receive(seq, data, lend, now);
                }
                _ => {}
            }
        }
        // Eighth: the FIN, once every byte before it is in.
        if seg.flags.contains(TcpFlags::FIN) {
            let at = seg.seq.add(seg.payload.len());
            if at.ge(self.rcv_nxt) && at.lt(self.rcv_nxt.add(wnd.max(1))) {
                self.fin_at = Some(at);
            }
            self.ack_now = true;
        }
        self.take_fin(now);
    }

    /// Stores in-window data and schedules the acknowledgment. `lend`:
    /// where `data` starts in a payload that may be read in place.
    fn receive(&mut self, seq: Seq, data: &[u8], lend: Option<usize>, now: Instant) {
        // Cut at the advertised window's right edge (section 3.10.7.4).
        let data = &data[..data.len().min(self.rcv_adv.since(seq))];
        if data.is_empty() {
            return;
        }
        let offset = seq.since(self.rcv_nxt);
        let had_holes = self.rx.has_holes();
        let (stored, advanced) = match lend {
            Some(at) if offset == 0 && self.rx.can_lend(data.len()) => {
                self.rx.lend(data.len(), at);
                self.counters.rx_in_place += 1;
                (data.len(), data.len())
            }
            _ => {
                if self.rx.is_lent() {
                    self.counters.rx_in_place_copied += 1;
                }
                self.rx.write(offset, data)
            }
        };
        if stored > 0 {
            self.active(now);
        }
        if offset > 0 && stored > 0 {
            self.recent.rotate_right(1);
            self.recent[0] = Some(seq);
        }
        if advanced > 0 {
            self.rcv_nxt = self.rcv_nxt.add(advanced);
            self.notes.readable = true;
            self.notes.received += advanced;
            self.counters.rx_bytes += advanced as u64;
        }
        if offset > 0 {
            // Out of order: a duplicate ACK at once, one per segment, for
            // the sender's fast retransmit (RFC 5681 section 4.2).
            self.counters.out_of_order += 1;
            self.dup_acks_owed += 1;
            self.ack_now = true;
        } else if had_holes {
            // A hole filled: acknowledge at once (RFC 5681 section 4.2).
            self.ack_now = true;
        } else {
            // Delayed ACK: every second full segment, else within the
            // delay (RFC 1122 section 4.2.3.2, RFC 5681 section 4.2).
            self.unacked_segments += 1;
            if self.unacked_segments >= 2 {
                self.ack_now = true;
            } else if self.ack_at.is_none() {
                self.ack_at = Some(now + self.p.delayed_ack);
            }
        }
    }

    /// Takes the peer's FIN once RCV.NXT has reached it.
    fn take_fin(&mut self, now: Instant) {
        if self.fin_at != Some(self.rcv_nxt) || self.state == TcpState::Closed {
            return;
        }
        self.fin_at = None;
        self.rcv_nxt = self.rcv_nxt.add(1);
        self.rcv_adv = self.rcv_adv.add(1).max_seq(self.rcv_nxt);
        self.ack_now = true;
        match self.state {
            TcpState::SynReceived | TcpState::Established => {
                self.state = TcpState::CloseWait;
                self.notes.peer_closed = true;
            }
            TcpState::FinWait1 => {
                self.notes.peer_closed = true;
                if self.fin_queued && self.snd_una == self.fin_seq().add(1) {
                    self.enter_time_wait(now);
                } else {
                    self.state = TcpState::Closing;
                }
            }
            TcpState::FinWait2 => {
                self.notes.peer_closed = true;
                self.enter_time_wait(now);
            }
            _ => {}
        }
    }

    /// An ACK of new data (RFC 9293 section 3.10.7.4; RFC 5681 and RFC
    /// 6582 for the congestion window).
    fn ack_new(&mut self, ack: Seq, now: Instant) {
        let acked = ack.since(self.snd_una);
        // The SYN's sequence number, then data, then the FIN.
        let data_acked = ack.since(self.tx_seq).min(self.tx.len());
        if data_acked > 0 {
            self.active(now);
        }
        self.tx.drain(..data_acked);
        self.counters.tx_bytes += data_acked as u64;
        self.tx_seq = self.tx_seq.add(data_acked);
        self.snd_una = ack;
        self.prune_sacked();
        // The probe timer starts again from this ACK (armed in output).
        self.tlp_at = None;
        if self.tlp_out.is_some_and(|end| ack.ge(end)) {
            self.tlp_out = None;
        }
        if self.snd_nxt.lt(ack) {
            self.snd_nxt = ack;
        }
        self.sample_rtt(ack, now);
        self.retries = 0;
        self.dupacks = 0;
        self.limited = 0;
        if self.in_recovery {
            if ack.ge(self.recover) {
                // Full acknowledgment (RFC 6582 section 3.2, step 3).
                self.in_recovery = false;
                self.sack_recovery = false;
                self.lost_to = ack;
                self.cwnd = self.ssthresh.min(self.flight() + self.smss).max(self.smss);
            } else if self.sack_recovery {
                // Partial, under RFC 6675: the pipe already says what
                // left the network, and the window stays. The new SND.UNA
                // goes again unless it was (NewReno's rule, kept for a
                // hole with too little SACKed above it to count as lost).
                self.high_rxt = self.high_rxt.max_seq(ack);
                if !self.sacked.first().is_some_and(|&(s, _)| s == ack) && ack.ge(self.high_rxt) {
                    self.retransmit_una = true;
                }
            } else {
                // Partial: resend the next hole, deflate (step 4).
                self.retransmit_una = true;
                self.cwnd = self.cwnd.saturating_sub(acked).max(self.smss) + self.smss;
            }
        } else if self.cwnd < self.ssthresh {
            self.cwnd += acked.min(self.smss);
        } else {
            self.cwnd += (self.smss * self.smss / self.cwnd.max(1)).max(1);
        }
        // RFC 6298 section 5.2 and 5.3.
        self.rto_at = if self.snd_una == self.snd_max {
            None
        } else {
            Some(now + self.rto)
        };
        if self.want_writable && self.tx.len() <= self.p.tx_buffer / 2 {
            self.want_writable = false;
            self.notes.writable = true;
        }
    }

    /// A duplicate ACK (RFC 5681 section 3.2, RFC 6582 section 3.2).
    fn dup_ack(&mut self) {
        self.counters.dup_acks += 1;
        self.dupacks += 1;
        // RFC 6675 section 5: with a scoreboard, recovery also starts
        // once SND.UNA counts as lost, however many duplicates came.
        let lost = self.lost_edge().gt(self.snd_una);
        // RFC 6582's guard: no new recovery for duplicates of what was
        // outstanding when the last one (or a timeout) began, as the
        // timeout's resending draws duplicates of its own. Blocks that
        // show SND.UNA lost are not such duplicates (those carry D-SACKs
        // or nothing), so once the resending has caught up, they start one.
        let fresh = self.snd_una.gt(self.recover) || (lost && self.snd_nxt == self.snd_max);
        if self.in_recovery {
            if !self.sack_recovery {
                self.cwnd += self.smss;
            }
        } else if (self.dupacks >= DUPACK_THRESHOLD || lost) && fresh {
            self.limited = 0;
            self.ssthresh = (self.flight() / 2).max(2 * self.smss);
            self.recover = self.snd_max;
            self.in_recovery = true;
            self.retransmit_una = true;
            self.rtt_sample = None;
            self.sack_recovery = !self.sacked.is_empty();
            if self.sack_recovery {
                // RFC 6675 section 5 step 4.2: the pipe does the rest.
                self.cwnd = self.ssthresh;
                self.high_rxt = self.snd_una;
                self.rxt_mark = None;
            } else {
                self.cwnd = self.ssthresh + 3 * self.smss;
            }
        } else if self.dupacks < DUPACK_THRESHOLD {
            // RFC 3042: new data on the first two, so that a small window
            // still draws the third.
            self.limited = self.dupacks as usize * self.smss;
        }
    }

    /// Adds the peer's SACK blocks to the scoreboard; true if they told
    /// of bytes it did not hold. A block not wholly within
    /// SND.UNA..SND.MAX says nothing of what is missing (a D-SACK, RFC
    /// 2883, lies below SND.UNA) and is skipped.
    fn take_sack(&mut self, blocks: &SackBlocks) -> bool {
        if !self.sack_ok || blocks.is_empty() {
            return false;
        }
        #[cfg(debug_assertions)]
        let before = self.sacked_bytes();
        let mut grew = 0isize;
        for &(l, r) in blocks.as_slice() {
            let (l, r) = (Seq(l), Seq(r));
            if l.lt(r) && self.snd_una.le(l) && r.le(self.snd_max) {
                grew += self.mark_sacked(l, r);
            }
        }
        #[cfg(debug_assertions)]
        debug_assert_eq!(self.sacked_bytes() as isize - before as isize, grew);
        // The tail loss probe arrived (the peer holds what ends where the
        // probe ended) beyond a hole: everything below it is lost.
        if let (Some(probe_end), Some(&(s, e))) = (self.tlp_out, self.sacked.last())
            && e == probe_end
            && self.snd_una.lt(s)
        {
            self.lost_to = s;
            self.tlp_out = None;
        }
        // Data sent after the last copy of a hole arrived, and the holes
        // are still there: their copies were lost too (as Linux's
        // tcp_mark_lost_retrans concludes). They go again by rule 1,
        // rather than after a timeout.
        if self.sack_recovery
            && let (Some(mark), Some(&(_, top))) = (self.rxt_mark, self.sacked.last())
            && top.gt(mark)
        {
            self.high_rxt = self.snd_una;
            self.rxt_mark = None;
        }
        grew > 0
    }

    /// Bytes the scoreboard holds.
    #[cfg(debug_assertions)]
    fn sacked_bytes(&self) -> usize {
        self.sacked.iter().map(|&(s, e)| e.since(s)).sum()
    }

    /// Merges `l..r` into the scoreboard; returns by how many bytes what
    /// it holds changed (less than nothing when a full scoreboard dropped
    /// its highest range for this one).
    fn mark_sacked(&mut self, mut l: Seq, mut r: Seq) -> isize {
        let mut delta = 0isize;
        // The first range that ends at or after `l` may touch it.
        let i = self.sacked.partition_point(|&(_, e)| e.lt(l));
        while let Some(&(s, e)) = self.sacked.get(i) {
            if s.gt(r) {
                break;
            }
            l = l.min_seq(s);
            r = r.max_seq(e);
            delta -= e.since(s) as isize;
            self.sacked.remove(i);
        }
        if self.sacked.len() >= MAX_SACKED {
            if i == self.sacked.len() {
                return delta;
            }
            if let Some((s, e)) = self.sacked.pop() {
                delta -= e.since(s) as isize;
            }
        }
        self.sacked.insert(i, (l, r));
        delta + r.since(l) as isize
    }

    /// Drops what SND.UNA passed from the scoreboard.
    fn prune_sacked(&mut self) {
        let una = self.snd_una;
        self.sacked.retain(|&(_, e)| e.gt(una));
        if let Some(first) = self.sacked.first_mut() {
            first.0 = first.0.max_seq(una);
        }
    }

    /// RFC 6675's IsLost as an edge: every unSACKed byte below it has
    /// more than (DupThresh - 1) * SMSS bytes, or DupThresh ranges,
    /// SACKed above it. SND.UNA when none has.
    fn lost_edge(&self) -> Seq {
        let threshold = (DUPACK_THRESHOLD as usize - 1) * self.smss;
        let mut above = 0;
        let floor = self.lost_to.max_seq(self.snd_una);
        for (n, &(s, e)) in self.sacked.iter().rev().enumerate() {
            above += e.since(s);
            if above > threshold || n + 1 >= DUPACK_THRESHOLD as usize {
                return s.max_seq(floor);
            }
        }
        floor
    }

    /// RFC 6675's pipe: the bytes thought to be in the network, each
    /// unSACKed byte up to SND.MAX counting once unless lost, and once
    /// more if sent again in this recovery.
    fn pipe(&self) -> usize {
        let lost = self.lost_edge();
        let mut pipe = 0;
        let mut at = self.snd_una;
        let tail = (self.snd_max, self.snd_max);
        for &(s, e) in self.sacked.iter().chain(std::iter::once(&tail)) {
            // The hole at..s: what lies above the lost edge is in flight,
            // what lies below HighRxt was sent again.
            pipe += s.since(at.max_seq(lost));
            pipe += self.high_rxt.min_seq(s).since(at);
            at = e;
        }
        pipe
    }

    /// RFC 6675's NextSeg, rules 1 and 3: the first hole from HighRxt on
    /// that ends at or below `limit` (the lost edge for rule 1, the
    /// highest SACKed range's start for rule 3), as (where, how much).
    fn next_hole(&self, limit: Seq) -> Option<(Seq, usize)> {
        let mut at = self.snd_una;
        for &(s, e) in &self.sacked {
            if s.gt(limit) {
                break;
            }
            let from = at.max_seq(self.high_rxt);
            if from.lt(s) {
                return Some((from, s.since(from).min(self.smss)));
            }
            at = e;
        }
        None
    }

    fn flight(&self) -> usize {
        self.snd_max.since(self.snd_una)
    }

    /// RFC 6298 section 2, timing one segment at a time; Karn's rule drops
    /// the sample when the segment was sent again.
    fn sample_rtt(&mut self, ack: Seq, now: Instant) {
        let Some((seq, sent)) = self.rtt_sample else {
            return;
        };
        if ack.lt(seq) {
            return;
        }
        self.rtt_sample = None;
        let r = now.saturating_duration_since(sent);
        match self.srtt {
            None => {
                self.srtt = Some(r);
                self.rttvar = r / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(r);
                self.rttvar = self.rttvar * 3 / 4 + delta / 4;
                self.srtt = Some(srtt * 7 / 8 + r / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(r);
        self.rto = (srtt + (self.rttvar * 4).max(Duration::from_millis(1)))
            .clamp(self.p.rto_min, self.p.rto_max);
    }

    /// The sequence number of our FIN (valid once it is queued).
    fn fin_seq(&self) -> Seq {
        self.tx_seq.add(self.tx.len())
    }

    // ---- timers ----

    /// The earliest deadline, for the stack's timer queue.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        [
            self.rto_at,
            self.tlp_at,
            self.ack_at,
            self.persist_at,
            self.end_at,
            self.keepalive_at,
            self.idle_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the deadlines that passed.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        if self.idle_at.is_some_and(|t| t <= now) {
            self.idle_at = None;
            self.abort(CloseReason::TimedOut);
            return;
        }
        if self.end_at.is_some_and(|t| t <= now) {
            self.end_at = None;
            match self.state {
                TcpState::SynSent | TcpState::SynReceived => {
                    self.close_with(CloseReason::ConnectFailed(libc::ETIMEDOUT));
                }
                // Closed, and what was sent is still not acknowledged.
                TcpState::FinWait1 | TcpState::Closing | TcpState::LastAck => {
                    self.abort(CloseReason::TimedOut);
                }
                // TIME-WAIT over, or FIN-WAIT-2 after a close gave up
                // waiting (Linux's tcp_fin_timeout).
                _ => self.close_with(CloseReason::Local),
            }
            return;
        }
        if self.ack_at.is_some_and(|t| t <= now) {
            self.ack_at = None;
            self.ack_now = true;
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.persist_at = None;
            self.probe_now = true;
            self.persist_backoff += 1;
        }
        if let (Some(t), Some(ka)) = (self.keepalive_at, self.p.keepalive)
            && t <= now
        {
            if self.keepalive_sent >= ka.probes {
                self.close_with(CloseReason::TimedOut);
                return;
            }
            // Probe only an idle connection; data in flight has its own
            // timer.
            if self.snd_una == self.snd_max && self.state.synchronized() {
                self.keepalive_probe = true;
                self.keepalive_sent += 1;
                self.counters.keepalive_probes += 1;
            }
            self.keepalive_at = Some(now + ka.interval);
        }
        if self.tlp_at.is_some_and(|t| t <= now) {
            self.tlp_at = None;
            self.tlp_now = true;
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.rto_at = None;
            self.retries += 1;
            let limit = if self.state.synchronized() {
                self.p.retries
            } else {
                self.p.syn_retries
            };
            if self.retries > limit {
                let reason = if self.state == TcpState::SynSent {
                    CloseReason::ConnectFailed(libc::ETIMEDOUT)
                } else {
                    CloseReason::TimedOut
                };
                self.close_with(reason);
                return;
            }
            self.counters.timeout_retransmits += 1;
            if self.state.synchronized() {
                // RFC 5681 section 3.1, equation 4; RFC 6582 section 3.2
                // step 1 after a timeout.
                self.ssthresh = (self.flight() / 2).max(2 * self.smss);
                self.cwnd = self.smss;
                self.in_recovery = false;
                self.sack_recovery = false;
                self.sacked.clear();
                self.lost_to = self.snd_una;
                self.tlp_at = None;
                self.tlp_out = None;
                self.dupacks = 0;
                self.limited = 0;
                self.recover = self.snd_max;
            }
            // Go back to the oldest unacknowledged byte (or the SYN).
            self.snd_nxt = self.snd_una;
            self.retransmit_una = false;
            self.rtt_sample = None;
            // RFC 6298 section 5.5: back off.
            self.rto = (self.rto * 2).min(self.p.rto_max);
        }
    }

    // ---- what to send ----

    /// The window field, scaled, and the edge it advertises.
    ///
    /// Receiver-side silly window avoidance (RFC 9293 section 3.8.6.2.2):
    /// the right edge moves right only by at least min(half the buffer,
    /// one MSS), or when the window was shut, so that the window field of
    /// consecutive ACKs stays the same while the application reads in
    /// small steps (a sender counts an ACK as a duplicate only if its
    /// window is unchanged, RFC 5681 section 2).
    fn window_field(&mut self) -> u16 {
        let free_edge = self.rcv_nxt.add(self.rx.free());
        let step = (self.rx.capacity() / 2).min(usize::from(self.p.mss));
        let shut = self.rcv_adv.le(self.rcv_nxt);
        if free_edge.since(self.rcv_adv) >= step || (shut && free_edge.gt(self.rcv_nxt)) {
            let scaled = (self.rx.free() >> self.rcv_shift).min(MAX_WINDOW);
            let edge = self.rcv_nxt.add(scaled << self.rcv_shift);
            if edge.gt(self.rcv_adv) {
                self.rcv_adv = edge;
            }
        }
        let promised = self.rcv_adv.since(self.rcv_nxt);
        // Round up: the edge announced is never left of the one promised.
        promised.div_ceil(1 << self.rcv_shift).min(MAX_WINDOW) as u16
    }

    fn segment(&mut self, seq: Seq, flags: TcpFlags, at: usize, len: usize) -> SegOut {
        let window = self.window_field();
        let mut flags = flags;
        if self.state != TcpState::SynSent {
            flags |= TcpFlags::ACK;
            self.ack_now = false;
            self.ack_at = None;
            self.unacked_segments = 0;
        }
        let sack = if len == 0 && !flags.contains(TcpFlags::SYN) {
            self.sack_blocks()
        } else {
            SackBlocks::default()
        };
        if !sack.is_empty() {
            self.counters.sack_acks += 1;
        }
        SegOut {
            seq,
            ack: self.rcv_nxt,
            flags,
            window,
            mss: None,
            wscale: None,
            sack_permitted: false,
            sack,
            at,
            len,
        }
    }

    /// The SACK blocks an ACK carries now (RFC 2018 section 4): every
    /// range held beyond a hole, the one holding the segment that arrived
    /// last first, then the rest from the highest down; none unless SACK
    /// was agreed. Only segments without payload carry them, so a data
    /// segment's size never has to leave room for them.
    fn sack_blocks(&mut self) -> SackBlocks {
        let mut blocks = SackBlocks::default();
        if !self.sack_ok {
            return blocks;
        }
        if let Some((l, r)) = self.dsack.take() {
            blocks.push(l.0, r.0);
        }
        let ranges = self.rx.ranges();
        let edge = |(a, b): (usize, usize)| (self.rcv_nxt.add(a).0, self.rcv_nxt.add(b).0);
        let mut used = [false; super::rxbuf::MAX_RANGES];
        // The ranges holding the latest segments first, then the rest
        // from the highest down.
        let by_recency = self.recent.iter().flatten().filter_map(|s| {
            let at = s.since(self.rcv_nxt);
            ranges.iter().position(|&(a, b)| a <= at && at < b)
        });
        for i in by_recency.chain((0..ranges.len()).rev()) {
            if used.get(i).copied().unwrap_or(true) {
                continue;
            }
            used[i] = true;
            let (l, r) = edge(ranges[i]);
            if !blocks.push(l, r) {
                break;
            }
        }
        blocks
    }

    /// Appends the segments to send now to `out`.
    pub(crate) fn output(&mut self, now: Instant, out: &mut Vec<SegOut>) {
        if let Some((seq, ack)) = self.rst.take() {
            out.push(SegOut {
                seq,
                ack: ack.unwrap_or(Seq(0)),
                flags: if ack.is_some() {
                    TcpFlags::RST | TcpFlags::ACK
                } else {
                    TcpFlags::RST
                },
                window: 0,
                mss: None,
                wscale: None,
                sack_permitted: false,
                sack: SackBlocks::default(),
                at: 0,
                len: 0,
            });
        }
        match self.state {
            TcpState::Closed => return,
            TcpState::SynSent | TcpState::SynReceived => {
                if self.snd_nxt == self.iss {
                    // The SYN (or SYN-ACK), with our MSS and window scale
                    // (RFC 7323: offered in a SYN, answered only to a
                    // SYN that offered it). Its window is never scaled.
                    let offer_wscale = self.state == TcpState::SynSent || self.wscale_agreed;
                    let shift = self.rcv_shift;
                    self.rcv_shift = 0;
                    let flags = TcpFlags::SYN;
                    let mut seg = self.segment(self.iss, flags, 0, 0);
                    self.rcv_shift = shift;
                    seg.mss = Some(self.p.mss);
                    // SACK-permitted offered in a SYN, answered only to a
                    // SYN that offered it.
                    seg.sack_permitted = if self.state == TcpState::SynSent {
                        self.p.sack
                    } else {
                        self.sack_ok
                    };
                    seg.wscale = offer_wscale.then_some(if self.state == TcpState::SynSent {
                        wscale_for(self.p.rx_buffer)
                    } else {
                        shift
                    });
                    out.push(seg);
                    self.snd_nxt = self.iss.add(1);
                    if self.snd_max.lt(self.snd_nxt) {
                        self.snd_max = self.snd_nxt;
                        self.rtt_sample = Some((self.snd_nxt, now));
                    }
                    self.rto_at.get_or_insert(now + self.rto);
                }
                if self.state == TcpState::SynSent {
                    return;
                }
                // SYN-RECEIVED sends nothing else until established.
                if self.ack_now {
                    let seg = self.segment(self.snd_nxt, TcpFlags(0), 0, 0);
                    out.push(seg);
                }
                return;
            }
            _ => {}
        }
        // The duplicate ACKs owed, as pure ACKs (a sender counts only
        // those, RFC 5681 section 2); the last is the ACK this pass owes.
        let owed = self.dup_acks_owed.min(MAX_DUP_ACKS_PER_PASS);
        self.dup_acks_owed = 0;
        for _ in 1..owed {
            let seg = self.pure_ack();
            out.push(seg);
        }
        if owed > 0 {
            self.ack_now = true;
        }
        let before = out.len();
        if self.retransmit_una && self.snd_una.lt(self.snd_max) {
            self.retransmit_una = false;
            self.counters.fast_retransmits += 1;
            let end = self.snd_una.add(self.smss);
            // Up to the first SACKed range at most: the peer has that.
            let end = match self.sacked.first() {
                Some(&(s, _)) if s.lt(end) => s,
                _ => end,
            };
            let len = end.since(self.snd_una);
            self.send_from(self.snd_una, len, now, out, false);
            if self.sack_recovery {
                self.high_rxt = self.high_rxt.max_seq(end);
                self.rxt_mark = Some(self.snd_max);
            }
        }
        if self.sack_recovery {
            self.resend_holes(now, out);
        }
        // New data (or data again after a timeout), as far as both
        // windows allow: the congestion window against the pipe in a
        // SACK recovery, else against everything sent and not
        // acknowledged.
        loop {
            let in_flight = self.snd_nxt.since(self.snd_una);
            let usable = if self.sack_recovery {
                let room = self.cwnd.saturating_sub(self.pipe());
                self.snd_wnd.saturating_sub(in_flight).min(room)
            } else {
                let limit = self.snd_wnd.min(self.cwnd + self.limited);
                limit.saturating_sub(in_flight)
            };
            let offset = self.snd_nxt.since(self.tx_seq);
            let unsent = self.tx.len().saturating_sub(offset);
            let fin_due = self.fin_queued && self.snd_nxt == self.fin_seq();
            if unsent == 0 {
                if fin_due {
                    self.send_from(self.snd_nxt, 0, now, out, true);
                }
                break;
            }
            let len = unsent.min(self.smss).min(usable);
            // Sender-side silly window avoidance (RFC 9293 section
            // 3.8.6.2.1), without Nagle: a full segment, all we have, or
            // half the largest window the peer has offered.
            let send = len > 0
                && (len == self.smss || len == unsent || len >= self.max_snd_wnd.div_ceil(2));
            if !send {
                break;
            }
            self.send_from(self.snd_nxt, len, now, out, true);
        }
        if std::mem::take(&mut self.tlp_now) {
            self.loss_probe(now, out);
        }
        self.arm_loss_probe(now);
        // Zero window (RFC 9293 section 3.8.6.1): probe it on a backing-off
        // timer while nothing is in flight.
        let offset = self.snd_nxt.since(self.tx_seq);
        let unsent = self.tx.len().saturating_sub(offset);
        if unsent > 0 && self.snd_wnd == 0 && self.snd_una == self.snd_max {
            if self.probe_now {
                self.probe_now = false;
                self.counters.window_probes += 1;
                self.send_from(self.snd_nxt, 1, now, out, true);
            } else if self.persist_at.is_none() {
                let wait = (self.rto * (1 << self.persist_backoff.min(6))).min(self.p.rto_max);
                self.persist_at = Some(now + wait);
            }
        }
        self.probe_now = false;
        if self.keepalive_probe {
            // SEG.SEQ = SND.NXT - 1 and no data (RFC 1122 section
            // 4.2.3.6): out of the peer's window, so it answers with an ACK.
            self.keepalive_probe = false;
            let seq = Seq(self.snd_nxt.0.wrapping_sub(1));
            let seg = self.segment(seq, TcpFlags(0), 0, 0);
            out.push(seg);
        }
        if out.len() == before && self.ack_now {
            let seg = self.pure_ack();
            out.push(seg);
        }
    }

    /// A tail loss probe may be armed or sent: SACK agreed, data in
    /// flight, no recovery or resending after a timeout under way, and no
    /// probe unanswered.
    fn loss_probe_allowed(&self) -> bool {
        self.sack_ok
            && self.state.synchronized()
            && self.snd_max.gt(self.snd_una)
            && !self.in_recovery
            && self.snd_nxt == self.snd_max
            && self.tlp_out.is_none()
    }

    /// RFC 8985 section 7.2: the probe timeout, two smoothed round trips
    /// (at least 10 ms, Linux's floor), plus a delayed ACK's worst case
    /// when one segment is in flight; armed only if it comes before the
    /// retransmission timer.
    fn arm_loss_probe(&mut self, now: Instant) {
        if !self.loss_probe_allowed() {
            self.tlp_at = None;
            return;
        }
        let Some(srtt) = self.srtt else {
            return;
        };
        if self.tlp_at.is_some() {
            return;
        }
        let mut pto = (srtt * 2).max(Duration::from_millis(10));
        if self.flight() <= self.smss {
            pto += WORST_CASE_DELAYED_ACK;
        }
        let at = now + pto;
        if self.rto_at.is_some_and(|rto| at < rto) {
            self.tlp_at = Some(at);
        }
    }

    /// RFC 8985 section 7.3: one segment, new data if the peer's window
    /// takes it (past the congestion window), else the last segment sent
    /// again; then the retransmission timer starts again.
    fn loss_probe(&mut self, now: Instant, out: &mut Vec<SegOut>) {
        if !self.loss_probe_allowed() {
            return;
        }
        let unsent = self
            .tx
            .len()
            .saturating_sub(self.snd_nxt.since(self.tx_seq));
        let in_flight = self.snd_nxt.since(self.snd_una);
        let len = unsent.min(self.smss);
        if len > 0 && self.snd_wnd >= in_flight + len {
            self.send_from(self.snd_nxt, len, now, out, true);
        } else {
            let fin_sent = self.fin_queued && self.snd_max == self.fin_seq().add(1);
            let end = if fin_sent {
                self.fin_seq()
            } else {
                self.snd_max
            };
            let len = end.since(self.snd_una).min(self.smss);
            let seq = Seq(end.0.wrapping_sub(len as u32));
            self.send_from(seq, len, now, out, false);
        }
        self.tlp_out = Some(self.snd_max);
        self.counters.loss_probes += 1;
        self.rto_at = Some(now + self.rto);
    }

    /// RFC 6675 section 5 step (C): while the pipe leaves room for a
    /// segment, the lost holes go again (NextSeg's rule 1), and when new
    /// data cannot go, the other holes below the highest SACKed range
    /// (rule 3).
    fn resend_holes(&mut self, now: Instant, out: &mut Vec<SegOut>) {
        while self.pipe() + self.smss <= self.cwnd {
            let unsent = self
                .tx
                .len()
                .saturating_sub(self.snd_nxt.since(self.tx_seq));
            let new_data = unsent > 0 && self.snd_wnd > self.snd_nxt.since(self.snd_una);
            let highest = self.sacked.last().map_or(self.snd_una, |&(s, _)| s);
            let hole = match self.next_hole(self.lost_edge()) {
                Some(hole) => hole,
                None if !new_data => match self.next_hole(highest) {
                    Some(hole) => hole,
                    None => break,
                },
                None => break,
            };
            let (seq, len) = hole;
            self.high_rxt = seq.add(len);
            self.rxt_mark = Some(self.snd_max);
            self.counters.fast_retransmits += 1;
            self.counters.sack_retransmits += 1;
            self.send_from(seq, len, now, out, false);
        }
    }

    /// An ACK with no data. Its sequence number is SND.MAX, the next
    /// byte never sent, not SND.NXT: while a timeout has SND.NXT back at
    /// SND.UNA resending, an ACK numbered there lies left of the peer's
    /// window, and a peer also resending would drop every ACK of ours as
    /// old while we dropped all of its (BSD's tcp_output does the same).
    fn pure_ack(&mut self) -> SegOut {
        self.segment(self.snd_max, TcpFlags(0), 0, 0)
    }

    /// One segment of up to `len` bytes from `seq` (with FIN if it ends
    /// where the FIN goes). `advance`: it is SND.NXT's segment.
    fn send_from(
        &mut self,
        seq: Seq,
        len: usize,
        now: Instant,
        out: &mut Vec<SegOut>,
        advance: bool,
    ) {
        let at = seq.since(self.tx_seq);
        let len = len.min(self.tx.len().saturating_sub(at));
        let mut flags = if len > 0 { TcpFlags::PSH } else { TcpFlags(0) };
        let end = seq.add(len);
        let with_fin = self.fin_queued && end == self.fin_seq();
        if with_fin {
            flags |= TcpFlags::FIN;
        }
        if len == 0 && !with_fin {
            return;
        }
        let seg = self.segment(seq, flags, at, len);
        out.push(seg);
        let next = end.add(usize::from(with_fin));
        if seq.lt(self.snd_max) && !advance {
            self.rtt_sample = None;
        }
        if advance {
            if seq.lt(self.snd_max) {
                self.rtt_sample = None;
            }
            self.snd_nxt = next;
        }
        if next.gt(self.snd_max) {
            if len > 0 {
                self.active(now);
            }
            if self.rtt_sample.is_none() && seq.ge(self.snd_max) {
                self.rtt_sample = Some((next, now));
            }
            self.snd_max = next;
        }
        // RFC 6298 section 5.1.
        self.rto_at.get_or_insert(now + self.rto);
    }

    /// Checks the invariants the fuzz target asks of every state.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.state == TcpState::Closed {
            return Ok(());
        }
        if self.snd_una.gt(self.snd_nxt) || self.snd_nxt.gt(self.snd_max) {
            return Err(format!(
                "send space out of order: una {:?} nxt {:?} max {:?}",
                self.snd_una, self.snd_nxt, self.snd_max
            ));
        }
        if self.tx.len() > self.p.tx_buffer {
            return Err(format!("send buffer holds {} bytes", self.tx.len()));
        }
        if self.rx.len() > self.rx.capacity() {
            return Err(format!("receive buffer holds {} bytes", self.rx.len()));
        }
        if self.state.synchronized() && self.rcv_adv.lt(self.rcv_nxt) && self.fin_at.is_none() {
            return Err("advertised edge behind RCV.NXT".to_string());
        }
        let mut at = self.snd_una;
        for &(s, e) in &self.sacked {
            if s.lt(at) || !s.lt(e) || e.gt(self.snd_max) {
                return Err(format!(
                    "scoreboard {:?} out of order in {:?}..{:?}",
                    self.sacked, self.snd_una, self.snd_max
                ));
            }
            at = e;
        }
        if self.snd_max.since(self.tx_seq) > self.tx.len() + 1 {
            return Err(format!(
                "sent {} bytes past a buffer of {}",
                self.snd_max.since(self.tx_seq),
                self.tx.len()
            ));
        }
        Ok(())
    }

    /// The congestion window and slow-start threshold, for statistics.
    pub(crate) fn cwnd(&self) -> (usize, usize) {
        (self.cwnd, self.ssthresh)
    }

    /// The smoothed round-trip time, once measured.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}

trait MaxSeq {
    fn max_seq(self, other: Seq) -> Seq;
    fn min_seq(self, other: Seq) -> Seq;
}

impl MaxSeq for Seq {
    fn max_seq(self, other: Seq) -> Seq {
        if self.lt(other) { other } else { self }
    }

    fn min_seq(self, other: Seq) -> Seq {
        if self.lt(other) { self } else { other }
    }
}

/// The window scale that lets a window of `buffer` bytes be announced.
fn wscale_for(buffer: usize) -> u8 {
    let mut shift = 0u8;
    while (MAX_WINDOW << shift) < buffer && shift < MAX_WSCALE {
        shift += 1;
    }
    shift
}

/// Drives one connection with a sequence of segments, calls and timer
/// runs read from `data`, checking the invariants after every step: the
/// fuzz target's body, and a randomized test's.
///
/// # Errors
/// The first invariant broken, with the step.
#[doc(hidden)]
pub fn fuzz_drive(data: &[u8]) -> Result<(), String> {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let word = |next: &mut dyn FnMut() -> Option<u8>| {
        u32::from_le_bytes([
            next().unwrap_or(0),
            next().unwrap_or(0),
            next().unwrap_or(0),
            next().unwrap_or(0),
        ])
    };
    let p = Params {
        mss: 536,
        rx_buffer: 4096,
        tx_buffer: 8192,
        time_wait: Duration::from_millis(100),
        fin_timeout: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(300),
        close_timeout: Duration::from_millis(200),
        delayed_ack: Duration::from_millis(5),
        rto_min: Duration::from_millis(10),
        rto_max: Duration::from_millis(500),
        rto_initial: Duration::from_millis(50),
        syn_retries: 3,
        retries: 5,
        sack: true,
        idle_timeout: (data.get(1).is_some_and(|b| b & 1 != 0))
            .then_some(Duration::from_millis(40)),
        keepalive: data
            .first()
            .is_some_and(|b| b & 8 != 0)
            .then_some(KeepAlive {
                idle: Duration::from_millis(30),
                interval: Duration::from_millis(10),
                probes: 3,
            }),
    };
    let start = Instant::now();
    let mut now = start;
    let Some(first) = next() else {
        return Ok(());
    };
    let iss = Seq(word(&mut next));
    let mut t = if first & 1 == 0 {
        Tcb::connect(p, iss, now)
    } else {
        let syn = SegIn {
            seq: Seq(word(&mut next)),
            ack: Seq(0),
            flags: TcpFlags::SYN,
            window: (word(&mut next) & 0xffff) as u16,
            mss: (first & 2 != 0).then_some(200 + u16::from(first >> 2)),
            wscale: (first & 4 != 0).then_some(first >> 4),
            sack_permitted: first & 8 != 0,
            sack: SackBlocks::default(),
            payload: &[],
            lendable: false,
        };
        Tcb::accept(p, iss, &syn, now)
    };
    let payload = [0x5au8; 2048];
    let mut out = Vec::new();
    let mut step = 0usize;
    while let Some(op) = next() {
        step += 1;
        match op % 8 {
            0 | 1 => {
                // A segment near what the connection expects.
                let flags = TcpFlags(next().unwrap_or(0x10) & 0x3f);
                let dseq = i32::from(next().unwrap_or(0) as i8) * 64;
                let dack = i32::from(next().unwrap_or(0) as i8) * 64;
                let len = usize::from(next().unwrap_or(0)) * 8;
                let window = u16::from(next().unwrap_or(0)) << 8;
                let base_seq = if t.state == TcpState::SynSent {
                    Seq(word(&mut next))
                } else {
                    t.rcv_nxt
                };
                // SACK blocks near what is in flight (some out of it).
                let mut sack = SackBlocks::default();
                for _ in 0..next().unwrap_or(0) % 5 {
                    let from = u32::from(next().unwrap_or(0)) * 64;
                    let len = u32::from(next().unwrap_or(0)) * 16;
                    let l = t.snd_una.0.wrapping_add(from);
                    sack.push(l, l.wrapping_add(len));
                }
                let seg = SegIn {
                    seq: Seq(base_seq.0.wrapping_add(dseq as u32)),
                    ack: Seq(t.snd_una.0.wrapping_add(dack as u32)),
                    flags,
                    window,
                    mss: None,
                    wscale: None,
                    sack_permitted: flags.contains(TcpFlags::SYN) && len % 16 == 8,
                    sack,
                    payload: &payload[..len.min(payload.len())],
                    lendable: false,
                };
                t.input(&seg, now);
            }
            2 => {
                let n = usize::from(next().unwrap_or(0)) * 32;
                t.write(&payload[..n.min(payload.len())]);
            }
            3 => {
                let n = usize::from(next().unwrap_or(0)) * 16;
                t.consume(n);
            }
            4 => match next().unwrap_or(0) % 3 {
                0 => t.shutdown(),
                1 => t.close(now),
                _ => t.abort(CloseReason::Aborted),
            },
            5 | 6 => {
                now += Duration::from_millis(u64::from(next().unwrap_or(0)));
                t.on_timer(now);
            }
            _ => {
                // ICMP about a segment near the oldest unacknowledged:
                // "fragmentation needed" with some MTU, or unreachable.
                let dseq = u32::from(next().unwrap_or(0)) * 32;
                let seq = Seq(t.snd_una.0.wrapping_add(dseq));
                match next().unwrap_or(0) {
                    0 => {
                        t.unreachable(seq, libc::ECONNREFUSED);
                    }
                    m => {
                        t.path_mtu(seq, u16::from(m) * 8);
                    }
                }
            }
        }
        out.clear();
        t.output(now, &mut out);
        for s in &out {
            if s.at + s.len > t.tx_buffered() {
                return Err(format!("step {step}: segment {s:?} past the send buffer"));
            }
            if s.len > t.smss.max(1) {
                return Err(format!(
                    "step {step}: segment of {} bytes, MSS {}",
                    s.len, t.smss
                ));
            }
        }
        t.check()
            .map_err(|e| format!("step {step} ({:?}): {e}", t.state))?;
        let _ = std::mem::take(&mut t.notes);
    }
    Ok(())
}

#[cfg(test)]
mod sack_tests {
    use super::{Params, SackBlocks, SegIn, Seq, Tcb, TcpState};
    use crate::wire::TcpFlags;
    use std::time::{Duration, Instant};

    fn params() -> Params {
        Params {
            mss: 1460,
            rx_buffer: 65536,
            tx_buffer: 65536,
            time_wait: Duration::from_millis(100),
            fin_timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(1),
            delayed_ack: Duration::from_millis(5),
            rto_min: Duration::from_millis(10),
            rto_max: Duration::from_millis(500),
            rto_initial: Duration::from_millis(50),
            syn_retries: 3,
            retries: 5,
            keepalive: None,
            sack: true,
            idle_timeout: None,
        }
    }

    fn seg(seq: u32, ack: u32, flags: TcpFlags, sack_permitted: bool, payload: &[u8]) -> SegIn<'_> {
        SegIn {
            seq: Seq(seq),
            ack: Seq(ack),
            flags,
            window: 65535,
            mss: Some(1460),
            wscale: None,
            sack_permitted,
            sack: SackBlocks::default(),
            payload,
            lendable: false,
        }
    }

    /// An accepted connection from a peer that offered SACK-permitted (or
    /// not), established: its peer's next sequence number is 1001.
    fn established(offer: bool) -> (Tcb, Instant, Vec<super::SegOut>) {
        let now = Instant::now();
        let mut t = Tcb::accept(
            params(),
            Seq(5000),
            &seg(1000, 0, TcpFlags::SYN, offer, &[]),
            now,
        );
        let mut out = Vec::new();
        t.output(now, &mut out);
        let synack = out[0];
        assert!(synack.flags.contains(TcpFlags::SYN));
        assert_eq!(synack.sack_permitted, offer, "answered only to an offer");
        t.input(&seg(1001, 5001, TcpFlags::ACK, false, &[]), now);
        assert_eq!(t.state, TcpState::Established);
        out.clear();
        (t, now, out)
    }

    #[test]
    fn acks_carry_the_ranges_held_beyond_a_hole_the_latest_first() {
        let (mut t, now, mut out) = established(true);
        let data = [7u8; 100];
        // 1001..1101 in order; 1201..1301 and 1401..1501 beyond holes.
        for at in [1001u32, 1201, 1401] {
            t.input(&seg(at, 5001, TcpFlags::ACK, false, &data), now);
        }
        t.output(now, &mut out);
        let ack = out.last().copied().expect("an ACK");
        assert_eq!(ack.ack, Seq(1101));
        assert_eq!(ack.sack.as_slice(), [(1401, 1501), (1201, 1301)]);
        // The segment that arrived last is reported first.
        out.clear();
        t.input(&seg(1251, 5001, TcpFlags::ACK, false, &data), now);
        t.output(now, &mut out);
        let ack = out.last().copied().expect("an ACK");
        assert_eq!(ack.sack.as_slice(), [(1201, 1351), (1401, 1501)]);
        // The holes fill: no more blocks.
        out.clear();
        t.input(&seg(1101, 5001, TcpFlags::ACK, false, &data), now);
        t.input(&seg(1351, 5001, TcpFlags::ACK, false, &data[..50]), now);
        t.output(now, &mut out);
        let ack = out.last().copied().expect("an ACK");
        assert_eq!(ack.ack, Seq(1501));
        assert!(ack.sack.is_empty());
    }

    #[test]
    fn fragmentation_needed_shrinks_the_segments_and_sends_again() {
        let (mut t, now, mut out) = established(false);
        assert_eq!(t.write(&[1u8; 4000]), 4000);
        t.output(now, &mut out);
        assert!(out.iter().all(|s| s.len <= 1460));
        let sent: usize = out.iter().map(|s| s.len).sum();
        assert_eq!(sent, 4000);
        out.clear();
        // Not about anything in flight (RFC 5927), or not smaller: ignored.
        assert!(!t.path_mtu(Seq(5001 + 4000), 1000));
        assert!(!t.path_mtu(Seq(5001), 1500));
        // About the first segment: 960-byte segments from 5001 again.
        assert!(t.path_mtu(Seq(5001), 1000));
        t.output(now, &mut out);
        let data: Vec<_> = out.iter().filter(|s| s.len > 0).collect();
        assert_eq!(data.first().map(|s| s.seq), Some(Seq(5001)));
        assert!(data.iter().all(|s| s.len <= 960), "{data:?}");
        assert_eq!(data.iter().map(|s| s.len).sum::<usize>(), 4000);
        assert_eq!(t.counters.path_mtu_drops, 1);
        // A forged tiny MTU stops at the floor.
        assert!(t.path_mtu(Seq(5001), 100));
        out.clear();
        t.output(now, &mut out);
        assert!(out.iter().all(|s| s.len <= super::MIN_PATH_MSS));
        assert!(t.check().is_ok());
    }

    #[test]
    fn a_duplicate_segment_is_reported_first_once() {
        let (mut t, now, mut out) = established(true);
        let data = [7u8; 100];
        t.input(&seg(1001, 5001, TcpFlags::ACK, false, &data), now);
        t.input(&seg(1201, 5001, TcpFlags::ACK, false, &data), now);
        // 1001..1101 again: a D-SACK block (RFC 2883), then the held range.
        t.input(&seg(1001, 5001, TcpFlags::ACK, false, &data), now);
        t.output(now, &mut out);
        let ack = out.last().copied().expect("an ACK");
        assert_eq!(ack.sack.as_slice(), [(1001, 1101), (1201, 1301)]);
        out.clear();
        t.input(&seg(1251, 5001, TcpFlags::ACK, false, &data[..10]), now);
        t.output(now, &mut out);
        let ack = out.last().copied().expect("an ACK");
        assert_eq!(ack.sack.as_slice(), [(1201, 1301)]);
    }

    /// An ACK from the peer of `ack`, SACKing `blocks` (sequence numbers
    /// as segment indexes from 5001, 1460 bytes each).
    fn sack_ack(ack: usize, blocks: &[(usize, usize)]) -> SegIn<'static> {
        let at = |k: usize| 5001 + (k * 1460) as u32;
        let mut s = seg(1001, at(ack), TcpFlags::ACK, false, &[]);
        for &(l, r) in blocks {
            s.sack.push(at(l), at(r));
        }
        s
    }

    /// Ten segments sent, each 1460 bytes from 5001.
    fn ten_in_flight() -> (Tcb, Instant, Vec<super::SegOut>) {
        let (mut t, now, mut out) = established(true);
        assert_eq!(t.write(&[3u8; 14_600]), 14_600);
        t.output(now, &mut out);
        assert_eq!(out.iter().filter(|s| s.len == 1460).count(), 10);
        out.clear();
        (t, now, out)
    }

    /// The data segments in `out`, as segment indexes.
    fn resent(out: &[super::SegOut]) -> Vec<usize> {
        out.iter()
            .filter(|s| s.len > 0)
            .map(|s| (s.seq.0 - 5001) as usize / 1460)
            .collect()
    }

    #[test]
    fn sack_recovery_sends_every_lost_hole_again_in_one_round_trip() {
        let (mut t, now, mut out) = ten_in_flight();
        // Segments 1 and 4 lost: the peer acknowledges 0, then SACKs
        // what arrives beyond the holes, one duplicate ACK a segment.
        t.input(&sack_ack(1, &[]), now);
        t.input(&sack_ack(1, &[(2, 3)]), now);
        t.input(&sack_ack(1, &[(2, 4)]), now);
        t.output(now, &mut out);
        assert_eq!(
            resent(&out),
            [] as [usize; 0],
            "two duplicates: no recovery yet"
        );
        t.input(&sack_ack(1, &[(5, 6), (2, 4)]), now);
        out.clear();
        t.output(now, &mut out);
        // The third: 1 goes again. 4 has one segment SACKed above it, not
        // enough to count as lost yet.
        assert_eq!(resent(&out), [1]);
        // More duplicates as 6..9 arrive: 4 counts as lost and goes again
        // before 1's copy is acknowledged, where NewReno would wait for
        // that partial ACK, a round trip later.
        for k in 7..=10 {
            t.input(&sack_ack(1, &[(5, k), (2, 4)]), now);
        }
        out.clear();
        t.output(now, &mut out);
        assert_eq!(resent(&out), [4]);
        assert_eq!(t.counters.sack_retransmits, 1);
        assert!(t.check().is_ok());
        out.clear();
        t.output(now, &mut out);
        assert_eq!(resent(&out), [] as [usize; 0], "nothing goes twice");
        // 1's copy arrives: a partial ACK up to the hole at 4, which went
        // again already and does not go a third time.
        t.input(&sack_ack(4, &[(5, 10)]), now);
        out.clear();
        t.output(now, &mut out);
        assert_eq!(resent(&out), [] as [usize; 0]);
        // 4's copy: everything, and the recovery ends.
        t.input(&sack_ack(10, &[]), now);
        assert!(!t.in_recovery && !t.sack_recovery && t.sacked.is_empty());
        assert_eq!(t.counters.fast_retransmits, 2);
        assert_eq!(t.counters.timeout_retransmits, 0);
        assert!(t.check().is_ok());
    }

    #[test]
    fn sack_recovery_starts_when_enough_is_sacked_above_a_hole() {
        let (mut t, now, mut out) = ten_in_flight();
        // One duplicate ACK (the others lost) SACKing four segments above
        // the first: segment 0 counts as lost at once (RFC 6675's
        // IsLost), without waiting for two more duplicates.
        t.input(&sack_ack(0, &[(1, 5)]), now);
        t.output(now, &mut out);
        assert_eq!(resent(&out), [0]);
        assert!(t.sack_recovery);
        // A block below SND.UNA (a D-SACK) or past what was sent is not
        // taken.
        t.input(&sack_ack(0, &[(11, 12)]), now);
        assert_eq!(t.sacked.len(), 1);
        assert!(t.check().is_ok());
    }

    #[test]
    fn a_loss_near_the_end_with_little_sacked_above_waits_for_no_timeout() {
        let (mut t, now, mut out) = ten_in_flight();
        // 2 and 8 lost; 9 alone is SACKed above 8.
        t.input(&sack_ack(2, &[]), now);
        t.input(&sack_ack(2, &[(3, 4)]), now);
        t.input(&sack_ack(2, &[(3, 5)]), now);
        t.input(&sack_ack(2, &[(3, 6)]), now);
        t.output(now, &mut out);
        assert_eq!(resent(&out), [2]);
        for k in [7, 8] {
            t.input(&sack_ack(2, &[(3, k)]), now);
        }
        t.input(&sack_ack(2, &[(9, 10), (3, 8)]), now);
        out.clear();
        t.output(now, &mut out);
        // 8 has one segment SACKed above it: not lost by the scoreboard,
        // and no new data to send instead, so rule 3 sends it.
        assert_eq!(resent(&out), [8]);
        // 2's copy arrives: the partial ACK stops at 8, already resent.
        t.input(&sack_ack(8, &[(9, 10)]), now);
        out.clear();
        t.output(now, &mut out);
        assert_eq!(resent(&out), [] as [usize; 0]);
        t.input(&sack_ack(10, &[]), now);
        assert!(!t.in_recovery);
        assert_eq!(t.counters.timeout_retransmits, 0);
    }

    #[test]
    fn an_ack_that_sacks_more_is_a_duplicate_whatever_its_window() {
        let (mut t, now, _) = ten_in_flight();
        t.input(&sack_ack(1, &[]), now);
        // A receiver growing its buffer: each duplicate a new window.
        for (k, window) in [(3, 60_000), (4, 61_000)] {
            let mut ack = sack_ack(1, &[(2, k)]);
            ack.window = window;
            t.input(&ack, now);
        }
        assert_eq!(t.counters.dup_acks, 2);
        // The same blocks and another window: not a duplicate.
        let mut ack = sack_ack(1, &[(2, 4)]);
        ack.window = 62_000;
        t.input(&ack, now);
        assert_eq!(t.counters.dup_acks, 2);
        // Without SACK, a window change is never a duplicate (RFC 5681).
        let (mut t, now, mut out) = established(false);
        assert_eq!(t.write(&[3u8; 14_600]), 14_600);
        t.output(now, &mut out);
        t.input(&sack_ack(1, &[]), now);
        let mut ack = sack_ack(1, &[]);
        ack.window = 60_000;
        t.input(&ack, now);
        assert_eq!(t.counters.dup_acks, 0);
    }

    #[test]
    fn a_lost_copy_of_a_hole_goes_again_once_later_data_is_sacked() {
        let (mut t, now, mut out) = ten_in_flight();
        // 1 lost; 2..4 SACKed by three duplicates: 1 goes again.
        t.input(&sack_ack(1, &[]), now);
        for k in 3..=5 {
            t.input(&sack_ack(1, &[(2, k)]), now);
        }
        t.output(now, &mut out);
        assert_eq!(resent(&out), [1]);
        // More data to send, and the rest of the flight SACKed: the pipe
        // lets new segments out after the copy of 1.
        assert_eq!(t.write(&[4u8; 4 * 1460]), 4 * 1460);
        for k in 6..=10 {
            t.input(&sack_ack(1, &[(2, k)]), now);
        }
        out.clear();
        t.output(now, &mut out);
        let new: Vec<usize> = resent(&out);
        assert!(new.first() == Some(&10), "{new:?}");
        // 10 arrives before 1's copy does: that copy was lost, and 1 goes
        // a third time without waiting for the timer.
        t.input(&sack_ack(1, &[(2, 11)]), now);
        out.clear();
        t.output(now, &mut out);
        assert_eq!(resent(&out).first(), Some(&1), "{:?}", resent(&out));
        assert_eq!(t.counters.timeout_retransmits, 0);
        assert!(t.check().is_ok());
    }

    #[test]
    fn a_loss_the_scoreboard_shows_after_a_timeout_starts_a_recovery() {
        let (mut t, _, mut out) = ten_in_flight();
        // Nothing comes back: the timer resends from 0, one segment.
        let later = t.rto_at.expect("armed");
        t.on_timer(later);
        t.output(later, &mut out);
        assert_eq!(resent(&out), [0]);
        // All but 9 had arrived: the ACK jumps to 9, and 9 goes again
        // (it was lost) with 10, new, after it.
        assert_eq!(t.write(&[5u8; 4 * 1460]), 4 * 1460);
        t.input(&sack_ack(9, &[]), later);
        out.clear();
        t.output(later, &mut out);
        assert_eq!(resent(&out), [9, 10]);
        assert_eq!(t.snd_nxt, t.snd_max, "the resending caught up");
        // 9's copy lost again; 10 and the segments that limited transmit
        // lets out are SACKed. 9 is below the point the timeout set, and
        // RFC 6582 alone would leave it to the timer.
        for k in 11..=13 {
            t.input(&sack_ack(9, &[(10, k)]), later);
            out.clear();
            t.output(later, &mut out);
        }
        assert!(t.in_recovery && t.sack_recovery);
        assert_eq!(resent(&out).first(), Some(&9), "{:?}", resent(&out));
        assert_eq!(t.counters.timeout_retransmits, 1);
        assert!(t.check().is_ok());
    }

    /// Ten segments in flight, 0..6 acknowledged 10 ms later (a round
    /// trip measured): 7, 8 and 9 are the flight's tail.
    fn a_tail_in_flight() -> (Tcb, Instant, Vec<super::SegOut>) {
        let (mut t, now, mut out) = ten_in_flight();
        let later = now + Duration::from_millis(10);
        t.input(&sack_ack(7, &[]), later);
        t.output(later, &mut out);
        assert!(out.is_empty());
        (t, later, out)
    }

    #[test]
    fn a_probe_for_a_lost_last_segment_ends_the_loss_without_a_timeout() {
        let (mut t, now, mut out) = a_tail_in_flight();
        // Two round trips (10 ms at least), before the retransmission
        // timer.
        let probe = t.tlp_at.expect("a probe armed");
        assert!(probe > now && t.rto_at.is_some_and(|rto| probe < rto));
        assert_eq!(t.deadline(), Some(probe));
        t.on_timer(probe);
        t.output(probe, &mut out);
        // Nothing new to send: the last segment again.
        assert_eq!(resent(&out), [9]);
        assert_eq!(t.counters.loss_probes, 1);
        assert!(t.tlp_at.is_none(), "one probe until it is answered");
        // 7 and 8 had arrived and 9 had not: the probe's ACK ends it.
        t.input(&sack_ack(10, &[]), probe);
        assert_eq!(t.snd_una, t.snd_max);
        assert!(!t.in_recovery);
        assert_eq!(t.counters.timeout_retransmits, 0);
        assert!(t.check().is_ok());
    }

    #[test]
    fn a_probe_that_arrives_beyond_holes_starts_their_recovery() {
        let (mut t, now, mut out) = a_tail_in_flight();
        let probe = t.tlp_at.expect("a probe armed");
        let _ = now;
        t.on_timer(probe);
        t.output(probe, &mut out);
        assert_eq!(resent(&out), [9]);
        // 7, 8 and 9 were all lost; the probe arrives, SACKed beyond
        // the holes: both are lost, and both go at once.
        t.input(&sack_ack(7, &[(9, 10)]), probe);
        out.clear();
        t.output(probe, &mut out);
        assert!(t.sack_recovery);
        assert_eq!(resent(&out), [7, 8]);
        t.input(&sack_ack(10, &[]), probe);
        assert!(!t.in_recovery);
        assert_eq!(t.counters.timeout_retransmits, 0);
        assert!(t.check().is_ok());
        // Without SACK no probe is armed (Linux's rule): the timer does it.
        let (mut t, now, mut out) = established(false);
        assert_eq!(t.write(&[3u8; 14_600]), 14_600);
        t.output(now, &mut out);
        t.input(&sack_ack(7, &[]), now + Duration::from_millis(10));
        t.output(now + Duration::from_millis(10), &mut out);
        assert!(t.tlp_at.is_none());
    }

    #[test]
    fn no_blocks_when_the_peer_did_not_offer_sack() {
        let (mut t, now, mut out) = established(false);
        let data = [7u8; 100];
        t.input(&seg(1201, 5001, TcpFlags::ACK, false, &data), now);
        t.output(now, &mut out);
        assert!(out.iter().all(|s| s.sack.is_empty()));
    }
}
