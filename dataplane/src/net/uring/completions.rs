//! A port's conversation with its ring: lending buffers, arming the
//! receive, entering the kernel, reaping completions.

use super::port::SocketPort;
use super::socket::*;
use super::*;

impl SocketPort {
    /// Lends an mbuf to every buffer id that has none, and publishes them.
    pub(super) fn refill(&mut self) {
        let mut added = false;
        while let Some(&bid) = self.empty.last() {
            let Some(m) = self.pool.alloc() else { break };
            let h = m.header();
            let addr = h.buf_addr as u64 + self.buf_offset as u64;
            let raw = m.into_raw();
            self.lent[usize::from(bid)] = Some(raw);
            self.bufs.add(addr, self.buf_len, bid);
            self.empty.pop();
            added = true;
        }
        if added {
            self.bufs.publish();
        }
    }

    pub(super) fn arm_recv(&mut self) {
        if self.recv_armed || self.eof || self.empty.len() == self.lent.len() {
            return;
        }
        let sqe = opcode::RecvMsgMulti::new(types::Fixed(0), &*self.msghdr, BGID)
            .build()
            .user_data(RECV_TAG);
        // SAFETY: the msghdr (and the scratch name it points at) are boxed
        // in the port and outlive the request: Drop cancels it and waits for
        // its last completion before they are freed.
        if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
            self.recv_armed = true;
        }
    }

    /// One `io_uring_enter`: submits what is queued and runs pending task
    /// work (completions then show up in the CQ).
    pub(super) fn enter(&mut self) {
        match self.ring.submit() {
            Ok(_) => {}
            // The CQ is backed up or the kernel is short of memory: the
            // SQEs stay queued and go with the next enter.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBUSY | libc::EAGAIN | libc::EINTR)
                ) => {}
            Err(_) => self.stats.errors += 1,
        }
        self.entered_since_rx = true;
    }

    /// Handles up to 64 completions; receives go to `out` while it has
    /// room (up to `room` of them), else to the stash. Returns how many
    /// completions there were.
    pub(super) fn reap(&mut self, out: &mut MbufBatch, room: &mut usize) -> usize {
        let mut cqes = [(0u64, 0i32, 0u32); 64];
        let mut n = 0;
        {
            let cq = self.ring.completion();
            for cqe in cq {
                cqes[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                n += 1;
                if n == cqes.len() {
                    break;
                }
            }
        }
        let mut got_buffers = false;
        for &(ud, res, flags) in &cqes[..n] {
            if ud == RECV_TAG {
                if !cqueue::more(flags) {
                    self.recv_armed = false;
                    if res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        self.stats.errors += 1;
                        // A stream that failed (reset, timed out) stays
                        // failed: link down, no re-arming.
                        if matches!(self.socket, Socket::Tcp(_)) {
                            self.eof = true;
                        }
                    }
                }
                if let Some(bid) = cqueue::buffer_select(flags) {
                    got_buffers = true;
                    if let Some(m) = self.take_lent(bid) {
                        self.deliver(m, res, out, room);
                    }
                }
            } else if ud & SEND_TAG != 0 {
                self.send_done((ud & !SEND_TAG) as usize, res, flags);
            }
        }
        if got_buffers || !self.empty.is_empty() {
            self.refill();
        }
        n
    }

    pub(super) fn take_lent(&mut self, bid: u16) -> Option<Mbuf> {
        let raw = self.lent.get_mut(usize::from(bid))?.take()?;
        self.empty.push(bid);
        // SAFETY: `raw` came from `into_raw` of an mbuf of our pool when it
        // was lent; the completion that named its buffer id hands it back,
        // so nobody else owns it now.
        Some(unsafe { Mbuf::from_raw(raw) })
    }

    /// Turns a filled receive buffer into a datagram mbuf.
    pub(super) fn deliver(&mut self, mut m: Mbuf, res: i32, out: &mut MbufBatch, room: &mut usize) {
        let Ok(written) = usize::try_from(res) else {
            return;
        };
        // The kernel wrote the recvmsg_out header and the name into the
        // headroom, just before the data offset: expose them to read them.
        let Ok(head) = m.prepend(RECV_PREFIX) else {
            self.stats.errors += 1;
            return;
        };
        let word =
            |at: usize| u32::from_ne_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let (payload, flags) = (word(8) as usize, word(12) as i32);
        let peer = from_name(&head[RECVMSG_OUT..RECVMSG_OUT + NAME_LEN]);
        if m.adj(RECV_PREFIX).is_err() {
            self.stats.errors += 1;
            return;
        }
        if payload == 0 && matches!(self.socket, Socket::Tcp(_)) {
            // The peer closed its side of the stream.
            self.eof = true;
            return;
        }
        if flags & libc::MSG_TRUNC != 0 || payload + RECV_PREFIX > written {
            self.stats.drop_one(DropReason::Oversized);
            return;
        }
        if m.set_len(payload).is_err() {
            self.stats.drop_one(DropReason::Oversized);
            return;
        }
        match peer {
            Some(p) => {
                meta::set_peer(&mut m, p);
            }
            None => meta::clear_peer(&mut m),
        }
        m.set_port(self.id.0.0);
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += payload as u64;
        if *room > 0 {
            *room -= 1;
            if let Err(m) = out.push(m) {
                // Cannot happen (room <= out's spare); keep it anyway.
                let _ = self.stash.push(m);
            }
        } else if let Err(m) = self.stash.push(m) {
            // The stash holds at most one reap's worth (64); unreachable.
            drop(m);
            self.stats.rx_packets -= 1;
            self.stats.drop_one(DropReason::NoMbuf);
        }
    }

    pub(super) fn send_done(&mut self, slot: usize, res: i32, flags: u32) {
        let Some(s) = self.tx.get_mut(slot) else {
            self.stats.errors += 1;
            return;
        };
        if cqueue::notif(flags) {
            s.notif_pending = false;
        } else {
            if res < 0 {
                self.stats.errors += 1;
            } else {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += res as u64;
            }
            s.notif_pending = cqueue::more(flags);
        }
        if !s.notif_pending
            && let Some(raw) = s.mbuf.take()
        {
            // SAFETY: the mbuf was handed over with `into_raw` when the send
            // was queued, and the kernel is done with it (its completion, or
            // the zero-copy notification, has arrived).
            drop(unsafe { Mbuf::from_raw(raw) });
            self.tx_free.push(slot as u32);
        }
    }

    /// The fixed buffer holding `len` bytes at `p`, if the pool's memory
    /// is registered and holds them.
    pub(super) fn fixed_index(&self, p: usize, len: usize) -> Option<u16> {
        self.fixed
            .iter()
            .find(|(start, n, _)| p >= *start && p + len <= start + n)
            .map(|&(_, _, i)| i)
    }

    /// Datagrams in flight (sent, not yet completed).
    pub fn tx_in_flight(&self) -> usize {
        self.tx.len() - self.tx_free.len()
    }

    /// Cumulative drops the socket reports (`SO_MEMINFO`).
    pub(super) fn socket_drops(&self) -> u64 {
        // SK_MEMINFO_VARS (linux/sock_diag.h).
        let mut info = [0u32; 9];
        let mut len = size_of_val(&info) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info`, which
        // lives for the call, and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.raw(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            u64::from(info[libc::SK_MEMINFO_DROPS as usize])
        } else {
            0
        }
    }
}
