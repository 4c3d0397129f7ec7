//! The [`Port`] implementation: bursts in and out, and the drop that
//! waits for the kernel to give every lent buffer back.

use super::port::SocketPort;
use super::socket::*;
use super::*;

impl Port for SocketPort {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let before = out.len();
        let mut room = out.spare().min(self.burst);
        while room > 0 {
            let Some(m) = self.stash.pop_front() else {
                break;
            };
            // Cannot fail: room <= spare.
            let _ = out.push(m);
            room -= 1;
        }
        if !self.recv_armed && !self.eof {
            self.refill();
            self.arm_recv();
        }
        // Pending SQEs, or task work the kernel flagged and no enter since
        // the last rx_burst has run: one enter.
        let flagged = self.ring.submission().taskrun();
        if !self.ring.submission().is_empty() || (flagged && !self.entered_since_rx) {
            self.enter();
        }
        self.entered_since_rx = false;
        while room > 0 && self.reap(out, &mut room) == 64 {}
        out.len() - before
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let mut taken = 0;
        let mut queued = 0;
        let mut dropped = MbufBatch::new();
        let tcp = matches!(self.socket, Socket::Tcp(_));
        // TCP: a burst's sends are one linked chain, and a chain starts only
        // when the last one is done. Sends in flight side by side on a
        // stream socket are not ordered: one that waits for room in the
        // socket buffer is retried after later ones went.
        let mut chain_left = usize::MAX;
        if tcp {
            if self.tx_in_flight() > 0 {
                let mut none = 0;
                let mut scratch = MbufBatch::new();
                self.reap(&mut scratch, &mut none);
                if self.tx_in_flight() > 0 {
                    return 0;
                }
            }
            let sq = self.ring.submission();
            chain_left = pkts
                .len()
                .min(self.tx_free.len())
                .min(sq.capacity() - sq.len());
        }
        while let Some(m) = pkts.first() {
            if chain_left == 0 {
                break;
            }
            let dest = if tcp {
                // Connected: no address; any in the metadata is ignored.
                None
            } else {
                meta::peer(m).or(self.peer)
            };
            if dest.is_none() && !tcp {
                self.stats.drop_one(DropReason::Filtered);
                if let Some(m) = pkts.pop_front() {
                    let _ = dropped.push(m);
                }
                taken += 1;
                continue;
            }
            if self.tx_free.is_empty() {
                // Slots come back with completions: reap them.
                let mut none = 0;
                let mut scratch = MbufBatch::new();
                self.reap(&mut scratch, &mut none);
                if self.tx_free.is_empty() {
                    break;
                }
            }
            if self.ring.submission().is_full() {
                break;
            }
            let Some(slot) = self.tx_free.pop() else {
                break;
            };
            let (ptr, len) = (m.data().as_ptr(), m.len());
            let s = &mut self.tx[slot as usize];
            // UDP: the destination, in the slot. TCP: none, and
            // MSG_WAITALL, with which the kernel retries a short send on a
            // stream socket until the whole mbuf is out (io_uring's
            // io_net_retry), so the stream keeps the mbufs' order.
            let (addr, alen, msg_flags) = match dest {
                Some(dest) => {
                    let alen = to_sockaddr(dest, &mut s.addr);
                    (
                        std::ptr::from_ref(&s.addr).cast::<libc::sockaddr>(),
                        alen,
                        0,
                    )
                }
                None => (std::ptr::null(), 0, libc::MSG_WAITALL),
            };
            let fixed = match self.zc_min {
                Some(min) if len >= min => self.fixed_index(ptr as usize, len),
                _ => None,
            };
            let sqe = match fixed {
                Some(index) => opcode::SendZc::new(types::Fixed(0), ptr, len as u32)
                    .buf_index(Some(index))
                    .dest_addr(addr)
                    .dest_addr_len(alen)
                    .flags(msg_flags)
                    .build(),
                None => opcode::Send::new(types::Fixed(0), ptr, len as u32)
                    .dest_addr(addr)
                    .dest_addr_len(alen)
                    .flags(msg_flags)
                    .build(),
            }
            .user_data(SEND_TAG | u64::from(slot));
            let sqe = if tcp && chain_left > 1 {
                sqe.flags(squeue::Flags::IO_LINK)
            } else {
                sqe
            };
            // The address is in the same boxed slot, which does not move.
            // SAFETY: the data is the mbuf's, which moves into the slot below
            // and stays until the completion (and SEND_ZC's notification).
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.tx_free.push(slot);
                break;
            }
            if let Some(m) = pkts.pop_front() {
                self.tx[slot as usize].mbuf = Some(m.into_raw());
            }
            taken += 1;
            queued += 1;
            chain_left = chain_left.saturating_sub(1);
        }
        Mbuf::free_bulk(dropped.drain());
        if queued > 0 {
            self.enter();
        }
        taken
    }

    #[inline]
    fn alloc_burst(&mut self, n: usize, out: &mut MbufBatch) -> usize {
        let before = out.len();
        let got = crate::net::memory::alloc_from(&self.pool, n, out);
        for m in &mut out[before..] {
            meta::clear_peer(m);
        }
        got
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn link(&self) -> LinkStatus {
        LinkStatus {
            up: !self.eof,
            speed_mbps: None,
            full_duplex: None,
        }
    }

    fn stats(&self) -> QueueStats {
        let mut s = self.stats;
        s.drop_n(DropReason::RxOverrun, self.socket_drops());
        s
    }

    fn id(&self) -> (PortId, QueueId) {
        self.id
    }
}

impl Drop for SocketPort {
    fn drop(&mut self) {
        // Take the receive back from the kernel, and wait for every send,
        // before any lent or in-flight mbuf goes back to the pool.
        if self.recv_armed {
            let cancel = opcode::AsyncCancel::new(RECV_TAG)
                .build()
                .user_data(CANCEL_TAG);
            // SAFETY: a cancel names no buffer.
            let _ = unsafe { self.ring.submission().push(&cancel) };
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut sink = MbufBatch::new();
        while (self.recv_armed || self.tx_in_flight() > 0) && Instant::now() < deadline {
            let ts = types::Timespec::new().nsec(10_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let mut room = 0;
            self.reap(&mut sink, &mut room);
            sink.clear();
            self.stash.clear();
        }
        if self.recv_armed || self.tx_in_flight() > 0 {
            // Never free what the kernel may still write: leak it.
            tracing::error!(
                "io_uring port {:?}: the kernel did not give back its buffers in {DRAIN_TIMEOUT:?}; leaking them",
                self.id
            );
            return;
        }
        let sub = self.ring.submitter();
        let _ = sub.unregister_buf_ring(BGID);
        // The ring's own teardown is asynchronous: drop its references to
        // the socket and the pool now, so that the port's address is free
        // and its pages unpinned when this returns.
        let _ = sub.unregister_files();
        if !self.fixed.is_empty() {
            let _ = sub.unregister_buffers();
        }
        for raw in self.lent.iter_mut().filter_map(Option::take) {
            // SAFETY: lent mbufs of our pool; the receive has ended (its last
            // completion came) and the ring is unregistered, so the kernel
            // holds none of them.
            drop(unsafe { Mbuf::from_raw(raw) });
        }
    }
}
