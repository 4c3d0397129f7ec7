//! The stack's timers: a hierarchical timing wheel (Varghese and Lauck's
//! scheme 7, as BSD's callouts and Linux's timers before 4.8 cascade).
//!
//! Five levels of 64 slots over a tick of [`TICK`]: level 0 holds what is
//! due within 64 ticks, one slot a tick; level `l` what is due within
//! 64^(l+1) ticks, one slot per 64^l. Inserting is O(1) (a push onto a
//! slot's list); each tick empties one level-0 slot and, every 64^l
//! ticks, moves one level-`l` slot down a level. A connection's RTO,
//! delayed-ACK, keep-alive and TIME-WAIT deadlines all go through it, so
//! a pass costs O(1) per timer however many connections wait in
//! TIME-WAIT, where the binary heap it replaces paid O(log n) per change
//! of deadline.
//!
//! Nothing is ever removed early: an entry carries the deadline it was
//! scheduled for, and the stack ignores one whose connection has since
//! scheduled another (see `Stack::run`). A deadline further out than the
//! wheel spans (12 days) is scheduled at the wheel's end, and the stack
//! schedules the rest when it fires.

use std::time::{Duration, Instant};

/// One tick.
pub(super) const TICK: Duration = Duration::from_millis(1);

const BITS: u32 = 6;
const SLOTS: usize = 1 << BITS;
const LEVELS: usize = 5;
/// The furthest a deadline may be, in ticks, from the current tick.
const SPAN: u64 = 1 << (BITS * LEVELS as u32);

/// Items due at a tick.
pub(super) struct Wheel<T> {
    epoch: Instant,
    /// The next tick to run: everything before it has been handed out.
    cur: u64,
    levels: Vec<Vec<Vec<(u64, T)>>>,
    /// Items on each level.
    counts: [usize; LEVELS],
    /// Items inserted for a tick already run: handed out at the next
    /// advance.
    due: Vec<T>,
    len: usize,
}

impl<T> Wheel<T> {
    /// An empty wheel whose tick 0 is `epoch`.
    pub(super) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            cur: 0,
            levels: (0..LEVELS)
                .map(|_| (0..SLOTS).map(|_| Vec::new()).collect())
                .collect(),
            counts: [0; LEVELS],
            due: Vec::new(),
            len: 0,
        }
    }

    /// Items waiting.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The tick that holds `at`, rounded up: an item never fires before
    /// its deadline.
    fn tick_of(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.epoch);
        let t = TICK.as_nanos();
        u64::try_from(d.as_nanos().div_ceil(t)).unwrap_or(u64::MAX)
    }

    /// Schedules `item` for `at`.
    pub(super) fn insert(&mut self, at: Instant, item: T) {
        let tick = self.tick_of(at);
        self.insert_tick(tick, item);
        self.len += 1;
    }

    fn insert_tick(&mut self, tick: u64, item: T) {
        if tick < self.cur {
            self.due.push(item);
            return;
        }
        let tick = tick.min(self.cur + SPAN - 1);
        let delta = tick - self.cur;
        let mut level = 0;
        while level + 1 < LEVELS && delta >= 1 << (BITS * (level as u32 + 1)) {
            level += 1;
        }
        let slot = ((tick >> (BITS * level as u32)) as usize) & (SLOTS - 1);
        self.levels[level][slot].push((tick, item));
        self.counts[level] += 1;
    }

    /// Hands every item due by `now` to `out`.
    pub(super) fn advance(&mut self, now: Instant, out: &mut Vec<T>) {
        // `now` rounded down: a tick runs once all of it has passed.
        let now_tick =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos() / TICK.as_nanos())
                .unwrap_or(u64::MAX);
        self.len -= self.due.len();
        out.append(&mut self.due);
        while self.cur <= now_tick {
            // With the lower levels empty, nothing happens before the next
            // slot of the lowest level in use moves down: skip to it (to
            // just past `now` when nothing waits at all).
            match self.counts.iter().position(|&c| c > 0) {
                None => {
                    self.cur = now_tick + 1;
                    return;
                }
                Some(0) => {}
                Some(level) => {
                    let unit = 1u64 << (BITS * level as u32);
                    let next = (self.cur | (unit - 1)) + 1;
                    if self.cur & (unit - 1) != 0 {
                        self.cur = next.min(now_tick + 1);
                        continue;
                    }
                }
            }
            self.step(out);
        }
    }

    /// Runs tick `cur`: cascades the higher levels whose slot starts now,
    /// then empties level 0's slot.
    fn step(&mut self, out: &mut Vec<T>) {
        let cur = self.cur;
        for level in 1..LEVELS {
            let shift = BITS * level as u32;
            if cur & ((1 << shift) - 1) != 0 {
                break;
            }
            let slot = ((cur >> shift) as usize) & (SLOTS - 1);
            let moved = std::mem::take(&mut self.levels[level][slot]);
            self.counts[level] -= moved.len();
            for (tick, item) in moved {
                self.insert_tick(tick, item);
            }
        }
        let slot = (cur as usize) & (SLOTS - 1);
        let fired = std::mem::take(&mut self.levels[0][slot]);
        self.counts[0] -= fired.len();
        self.len -= fired.len();
        out.extend(fired.into_iter().map(|(_, item)| item));
        self.cur += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::{SPAN, TICK, Wheel};
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    /// Random deadlines near and far, random steps of time: every item
    /// fires at the first advance that passes its deadline's tick, and
    /// never before its deadline.
    #[test]
    fn fires_each_item_once_when_due_never_early() {
        let epoch = Instant::now();
        let mut w: Wheel<u64> = Wheel::new(epoch);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut waiting: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut now = epoch;
        let mut out = Vec::new();
        let mut fired = 0;
        for id in 0..200_000u64 {
            // Deadlines from the past to hours ahead, most within seconds.
            let r = rnd();
            let ahead = match r % 8 {
                0 => Duration::from_micros(r >> 40 & 0xfff),
                1..=4 => Duration::from_micros(r >> 20 & 0xf_ffff),
                5 | 6 => Duration::from_millis(r >> 20 & 0xf_ffff),
                _ => Duration::from_secs(r >> 20 & 0x3fff),
            };
            let at = if r & (1 << 63) != 0 && id % 16 == 0 {
                now.checked_sub(Duration::from_micros(r >> 50))
                    .unwrap_or(now)
            } else {
                now + ahead
            };
            w.insert(at, id);
            waiting.insert(id, at);
            if id % 4 == 0 {
                let step = match rnd() % 16 {
                    0 => Duration::from_secs(rnd() % 600),
                    1..=3 => Duration::from_millis(rnd() % 5000),
                    _ => Duration::from_micros(rnd() % 3000),
                };
                now += step;
                out.clear();
                w.advance(now, &mut out);
                for id in &out {
                    let at = waiting.remove(id).expect("fired once");
                    assert!(at <= now, "item {id} fired before its deadline");
                    fired += 1;
                }
                // Nothing left is due by the last whole tick.
                let whole = now - TICK;
                for (id, at) in &waiting {
                    assert!(
                        *at > whole,
                        "item {id} due at {at:?} still waits at {now:?}"
                    );
                }
                assert_eq!(w.len(), waiting.len());
            }
        }
        now += Duration::from_secs(u64::from(u32::MAX));
        out.clear();
        w.advance(now, &mut out);
        // Deadlines past the span come back early, for the caller to
        // schedule again; none is left here.
        fired += out.len();
        assert_eq!(fired, 200_000);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_deadline_past_the_span_fires_at_the_span() {
        let epoch = Instant::now();
        let mut w = Wheel::new(epoch);
        w.insert(epoch + Duration::from_secs(100 * 24 * 3600), "far");
        let mut out = Vec::new();
        w.advance(epoch + TICK * (SPAN as u32 - 3), &mut out);
        assert!(out.is_empty());
        w.advance(epoch + TICK * SPAN as u32, &mut out);
        assert_eq!(out, ["far"]);
    }
}
