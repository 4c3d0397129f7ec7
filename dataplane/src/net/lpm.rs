//! IPv4 longest-prefix match: DPDK's DIR-24-8 (`rte_lpm`).
//!
//! A 2^24-entry first table (`tbl24`) indexed by the top 24 bits of the
//! address answers every prefix of length 24 or less in one load. An entry
//! that a longer prefix splits points instead to a group of 256 entries in
//! the second table (`tbl8`), indexed by the last byte: two loads at most.
//! Each entry is 32 bits: valid, "extended" (points to a group), the depth
//! of the rule that wrote it (6 bits) and a 24-bit next hop or group
//! index, the layout of `rte_lpm`'s entries.
//!
//! Adding a rule writes the entries it covers whose current rule is no
//! longer than it. Deleting one clears the entries it covered and installs
//! again, shortest first, every remaining rule that overlaps them; rules
//! outside that range are untouched.
//!
//! `tbl24` is 64 MiB and comes from 2 MiB hugepages when there are some
//! (else 4 KiB pages with transparent hugepages advised): a random lookup
//! is one cache miss, and without hugepages a TLB miss too.
//!
//! ```
//! use dataplane::net::lpm::Lpm4;
//! use std::net::Ipv4Addr;
//!
//! let mut lpm = Lpm4::new(64)?;
//! lpm.add(Ipv4Addr::new(10, 0, 0, 0), 8, 1)?;
//! lpm.add(Ipv4Addr::new(10, 1, 2, 0), 25, 2)?;
//! assert_eq!(lpm.lookup(Ipv4Addr::new(10, 1, 2, 3).into()), Some(2));
//! assert_eq!(lpm.lookup(Ipv4Addr::new(10, 1, 2, 200).into()), Some(1));
//! assert_eq!(lpm.lookup(Ipv4Addr::new(11, 0, 0, 1).into()), None);
//! lpm.delete(Ipv4Addr::new(10, 1, 2, 0), 25)?;
//! assert_eq!(lpm.lookup(Ipv4Addr::new(10, 1, 2, 3).into()), Some(1));
//! # Ok::<(), dataplane::Error>(())
//! ```

use crate::{Error, Result};
use hugepages::region::{IovaMode, Region};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

const TBL24_LEN: usize = 1 << 24;
const GROUP: usize = 256;

const VALID: u32 = 1 << 31;
const EXT: u32 = 1 << 30;
const DEPTH_SHIFT: u32 = 24;
const DEPTH_MASK: u32 = 0x3f << DEPTH_SHIFT;
const HOP_MASK: u32 = (1 << 24) - 1;

/// The largest next hop an entry holds (24 bits, as `rte_lpm`).
pub const MAX_NEXT_HOP: u32 = HOP_MASK;

#[inline(always)]
const fn entry(depth: u8, hop: u32) -> u32 {
    VALID | ((depth as u32) << DEPTH_SHIFT) | hop
}

#[inline(always)]
const fn depth_of(e: u32) -> u8 {
    ((e & DEPTH_MASK) >> DEPTH_SHIFT) as u8
}

/// The first table: 2^24 entries in a region of their own.
struct Tbl24 {
    region: Region,
}

impl Tbl24 {
    fn new() -> Result<Tbl24> {
        let region = Region::builder(TBL24_LEN * 4)
            .iova_mode(IovaMode::Va)
            .build()?;
        if region.slice::<u32>(0, TBL24_LEN).is_none() {
            return Err(Error::Config(format!(
                "the LPM's tbl24 region has {} bytes, not {}",
                region.len(),
                TBL24_LEN * 4
            )));
        }
        Ok(Tbl24 { region })
    }

    /// The table as an array, so that an index below 2^24 needs no
    /// bounds check: the lookups' view. `None` cannot happen (the region
    /// holds `TBL24_LEN` words, checked in `new`), and would read as "no
    /// route".
    #[inline(always)]
    fn table(&self) -> Option<&[u32; TBL24_LEN]> {
        self.region
            .slice::<u32>(0, TBL24_LEN)
            .and_then(|s| s.try_into().ok())
    }

    /// Entry `i`: the control path's view.
    fn at(&self, i: usize) -> u32 {
        self.table().map_or(0, |t| t[i & (TBL24_LEN - 1)])
    }

    /// Sets entry `i`.
    fn set(&mut self, i: usize, value: u32) {
        if let Some(t) = self.table_mut() {
            t[i & (TBL24_LEN - 1)] = value;
        }
    }

    /// The table, writable: the control path's view for loops over many
    /// entries.
    fn table_mut(&mut self) -> Option<&mut [u32; TBL24_LEN]> {
        self.region
            .slice_mut::<u32>(0, TBL24_LEN)
            .and_then(|s| s.try_into().ok())
    }
}

/// An IPv4 routing table: DIR-24-8 longest-prefix match (see the module
/// docs). Next hops are 24-bit numbers (a port, an index into a table of
/// neighbours).
pub struct Lpm4 {
    tbl24: Tbl24,
    tbl8: Vec<[u32; GROUP]>,
    free_groups: Vec<u32>,
    max_groups: usize,
    rules: BTreeMap<(u32, u8), u32>,
}

impl fmt::Debug for Lpm4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lpm4")
            .field("rules", &self.rules.len())
            .field("tbl8_groups", &(self.tbl8.len() - self.free_groups.len()))
            .field("max_groups", &self.max_groups)
            .field("hugepages", &self.tbl24.region.is_hugepage_backed())
            .finish()
    }
}

fn mask(depth: u8) -> u32 {
    if depth == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(depth))
    }
}

impl Lpm4 {
    /// An empty table with room for `max_groups` tbl8 groups (one per /24
    /// that a longer prefix splits; DPDK's `number_tbl8s`).
    ///
    /// # Errors
    ///
    /// [`Error::Memory`] when the 64 MiB first table cannot be mapped.
    pub fn new(max_groups: usize) -> Result<Lpm4> {
        Ok(Lpm4 {
            tbl24: Tbl24::new()?,
            tbl8: Vec::new(),
            free_groups: Vec::new(),
            max_groups: max_groups.min(HOP_MASK as usize + 1),
            rules: BTreeMap::new(),
        })
    }

    /// Whether the first table is on hugepages.
    pub fn on_hugepages(&self) -> bool {
        self.tbl24.region.is_hugepage_backed()
    }

    /// The rules, by (prefix, length), with their next hops.
    pub fn rules(&self) -> impl Iterator<Item = (Ipv4Addr, u8, u32)> + '_ {
        self.rules
            .iter()
            .map(|(&(p, d), &h)| (Ipv4Addr::from(p), d, h))
    }

    /// Adds (or replaces) the route `prefix/depth` → `next_hop`; bits of
    /// `prefix` past `depth` are ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a depth over 32 or a next hop over
    /// [`MAX_NEXT_HOP`]; [`Error::Full`] when a tbl8 group is needed and
    /// all `max_groups` are in use (the table is unchanged).
    pub fn add(&mut self, prefix: Ipv4Addr, depth: u8, next_hop: u32) -> Result<()> {
        if depth > 32 {
            return Err(Error::Config(format!("prefix length {depth} is over 32")));
        }
        if next_hop > MAX_NEXT_HOP {
            return Err(Error::Config(format!(
                "next hop {next_hop} does not fit in 24 bits"
            )));
        }
        let p = u32::from(prefix) & mask(depth);
        if depth > 24 && self.tbl24.at((p >> 8) as usize) & EXT == 0 && !self.group_available() {
            return Err(Error::Full(format!(
                "the LPM's {} tbl8 groups",
                self.max_groups
            )));
        }
        self.install(p, depth, next_hop, p, p | !mask(depth))?;
        self.rules.insert((p, depth), next_hop);
        Ok(())
    }

    /// Removes the route `prefix/depth`; addresses it covered fall to the
    /// next longest rule.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when there is no such rule.
    pub fn delete(&mut self, prefix: Ipv4Addr, depth: u8) -> Result<()> {
        let p = u32::from(prefix) & mask(depth.min(32));
        if self.rules.remove(&(p, depth)).is_none() {
            return Err(Error::Config(format!(
                "no route {}/{depth}",
                Ipv4Addr::from(p)
            )));
        }
        // Clear what the rule covered...
        if depth <= 24 {
            let start = (p >> 8) as usize;
            if let Some(t24) = self.tbl24.table_mut() {
                for e in &mut t24[start..start + (1usize << (24 - depth))] {
                    if *e & EXT != 0 {
                        self.free_groups.push(*e & HOP_MASK);
                    }
                    *e = 0;
                }
            }
        } else {
            let e = self.tbl24.at((p >> 8) as usize);
            if e & EXT != 0 {
                let g = &mut self.tbl8[(e & HOP_MASK) as usize];
                let start = (p & 0xff) as usize;
                g[start..start + (1usize << (32 - depth))].fill(0);
            }
        }
        // ...and put back every rule overlapping it, shortest first, into
        // that range only (outside it nothing changed).
        let lo = p;
        let hi = p | !mask(depth);
        let mut overlapping: Vec<(u32, u8, u32)> = self
            .rules
            .iter()
            .filter(|&(&(rp, rd), _)| rp <= hi && (rp | !mask(rd)) >= lo)
            .map(|(&(rp, rd), &h)| (rp, rd, h))
            .collect();
        overlapping.sort_by_key(|&(_, d, _)| d);
        for (rp, rd, h) in overlapping {
            // Groups freed above are enough for the rules that had them.
            self.install(rp, rd, h, lo, hi)?;
        }
        if depth > 24 {
            self.collapse((p >> 8) as usize);
        }
        Ok(())
    }

    /// Gives back the group of tbl24 entry `i` when no rule longer than
    /// /24 falls in it any more: its entries are then all the same.
    fn collapse(&mut self, i: usize) {
        let e = self.tbl24.at(i);
        if e & EXT == 0 {
            return;
        }
        let lo = (i as u32) << 8;
        let longer = self
            .rules
            .range((lo, 0)..=(lo | 0xff, 32))
            .any(|(&(_, d), _)| d > 24);
        if longer {
            return;
        }
        let g = e & HOP_MASK;
        let first = self.tbl8.get(g as usize).map_or(0, |grp| grp[0]);
        self.tbl24.set(i, first);
        self.free_groups.push(g);
    }

    fn group_available(&self) -> bool {
        !self.free_groups.is_empty() || self.tbl8.len() < self.max_groups
    }

    fn alloc_group(&mut self, fill: u32) -> Result<u32> {
        let value = if fill & VALID != 0 { fill } else { 0 };
        if let Some(g) = self.free_groups.pop() {
            self.tbl8[g as usize] = [value; GROUP];
            return Ok(g);
        }
        if self.tbl8.len() >= self.max_groups {
            return Err(Error::Full(format!(
                "the LPM's {} tbl8 groups",
                self.max_groups
            )));
        }
        self.tbl8.push([value; GROUP]);
        Ok((self.tbl8.len() - 1) as u32)
    }

    /// Writes the rule into the entries of addresses `lo..=hi` it covers
    /// whose current rule is no longer.
    fn install(&mut self, p: u32, depth: u8, hop: u32, lo: u32, hi: u32) -> Result<()> {
        let (lo, hi) = (lo.max(p), hi.min(p | !mask(depth)));
        if lo > hi {
            return Ok(());
        }
        let new = entry(depth, hop);
        let better = |e: u32| e & VALID == 0 || depth_of(e) <= depth;
        if depth > 24 {
            // Within one /24: its group (made from the entry when it has
            // none yet) gets the rule over the last bytes it covers.
            let i = (lo >> 8) as usize;
            let base = (i as u32) << 8;
            let (first, last) = ((lo - base) as usize, (hi - base) as usize);
            let e = self.tbl24.at(i);
            let g = if e & EXT != 0 {
                e & HOP_MASK
            } else {
                let g = self.alloc_group(e)?;
                self.tbl24.set(i, VALID | EXT | g);
                g
            };
            for x in &mut self.tbl8[g as usize][first..=last] {
                if better(*x) {
                    *x = new;
                }
            }
            return Ok(());
        }
        let Some(t24) = self.tbl24.table_mut() else {
            return Err(Error::Config("the LPM's tbl24 region is missing".into()));
        };
        for (i, e) in t24
            .iter_mut()
            .enumerate()
            .take((hi >> 8) as usize + 1)
            .skip((lo >> 8) as usize)
        {
            if *e & EXT != 0 {
                // The part of this /24 in range, as last-byte indices.
                let base = (i as u32) << 8;
                let first = (lo.max(base) - base) as usize;
                let last = (hi.min(base | 0xff) - base) as usize;
                for x in &mut self.tbl8[(*e & HOP_MASK) as usize][first..=last] {
                    if better(*x) {
                        *x = new;
                    }
                }
            } else if better(*e) {
                *e = new;
            }
        }
        Ok(())
    }

    /// The next hop of the longest prefix matching `ip` (host order).
    #[inline(always)]
    pub fn lookup(&self, ip: u32) -> Option<u32> {
        let e = self.tbl24.table()?[(ip >> 8) as usize];
        let e = if e & EXT != 0 {
            self.tbl8
                .get((e & HOP_MASK) as usize)
                .map_or(0, |g| g[(ip & 0xff) as usize])
        } else {
            e
        };
        (e & VALID != 0).then_some(e & HOP_MASK)
    }

    /// Looks up to 64 addresses (host order) at once, as
    /// `rte_lpm_lookup_bulk`: `hops[i]` gets the next hop of `ips[i]`, and
    /// bit `i` of the result says whether it had one (a miss leaves
    /// `hops[i]` 0). All first-table loads are issued before any second
    /// one, so their cache misses overlap.
    ///
    /// Only the first `min(ips.len(), hops.len(), 64)` addresses are
    /// looked up.
    #[inline]
    pub fn lookup_burst(&self, ips: &[u32], hops: &mut [u32]) -> u64 {
        let n = ips.len().min(hops.len()).min(64);
        let Some(t24) = self.tbl24.table() else {
            hops[..n].fill(0);
            return 0;
        };
        for (h, &ip) in hops[..n].iter_mut().zip(&ips[..n]) {
            *h = t24[(ip >> 8) as usize];
        }
        let mut hits = 0u64;
        for (i, (h, &ip)) in hops[..n].iter_mut().zip(&ips[..n]).enumerate() {
            let mut e = *h;
            if e & EXT != 0 {
                e = self
                    .tbl8
                    .get((e & HOP_MASK) as usize)
                    .map_or(0, |g| g[(ip & 0xff) as usize]);
            }
            let valid = e & VALID != 0;
            hits |= u64::from(valid) << i;
            *h = if valid { e & HOP_MASK } else { 0 };
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// The obvious longest-prefix match over the rule list.
    fn naive(rules: &BTreeMap<(u32, u8), u32>, ip: u32) -> Option<u32> {
        rules
            .iter()
            .filter(|&(&(p, d), _)| ip & mask(d) == p)
            .max_by_key(|&(&(_, d), _)| d)
            .map(|(_, &h)| h)
    }

    fn random_prefix(rng: &mut SmallRng, near: &[u32]) -> (u32, u8) {
        // Cluster prefixes so that they nest and split one another often.
        let base = if !near.is_empty() && rng.random_bool(0.7) {
            near[rng.random_range(0..near.len())] ^ (rng.random::<u32>() >> rng.random_range(8..32))
        } else {
            rng.random()
        };
        // Short prefixes cover up to 2^18 entries each (debug builds are
        // slow at that); the default route is added once by the caller.
        let depth = match rng.random_range(0..20) {
            0 => rng.random_range(6..=10),
            1..=9 => rng.random_range(11..=24),
            _ => rng.random_range(25..=32),
        };
        (base & mask(depth), depth)
    }

    #[test]
    fn matches_a_naive_reference_on_random_tables() {
        let mut rng = SmallRng::seed_from_u64(0x1e5);
        let mut lpm = Lpm4::new(4096).expect("lpm");
        let mut reference = BTreeMap::new();
        lpm.add(Ipv4Addr::UNSPECIFIED, 0, 77).expect("default");
        reference.insert((0, 0), 77);
        for round in 0..3 {
            let mut bases = Vec::new();
            for _ in 0..300 {
                let (p, d) = random_prefix(&mut rng, &bases);
                let hop = rng.random_range(0..=MAX_NEXT_HOP);
                lpm.add(Ipv4Addr::from(p), d, hop).expect("room");
                reference.insert((p, d), hop);
                bases.push(p);
            }
            // Delete a third of the rules.
            let keys: Vec<(u32, u8)> = reference.keys().copied().collect();
            for &(p, d) in keys
                .iter()
                .filter(|&&(_, d)| d > 0 && rng.random_bool(0.33))
            {
                lpm.delete(Ipv4Addr::from(p), d).expect("present");
                reference.remove(&(p, d));
            }
            let mut ips = Vec::new();
            for _ in 0..10_000 {
                // Half near a rule's prefix, half anywhere.
                let ip = if rng.random_bool(0.5) && !bases.is_empty() {
                    bases[rng.random_range(0..bases.len())] ^ (rng.random::<u32>() >> 20)
                } else {
                    rng.random()
                };
                assert_eq!(
                    lpm.lookup(ip),
                    naive(&reference, ip),
                    "round {round} ip {ip:#x}"
                );
                ips.push(ip);
            }
            for chunk in ips.chunks(64) {
                let mut hops = [0u32; 64];
                let hits = lpm.lookup_burst(chunk, &mut hops);
                for (i, &ip) in chunk.iter().enumerate() {
                    let want = naive(&reference, ip);
                    assert_eq!(hits >> i & 1 == 1, want.is_some());
                    assert_eq!(hops[i], want.unwrap_or(0));
                }
            }
        }
        let listed: Vec<_> = lpm
            .rules()
            .map(|(p, d, h)| ((u32::from(p), d), h))
            .collect();
        assert_eq!(listed, reference.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn edges() {
        let mut lpm = Lpm4::new(1).expect("lpm");
        assert_eq!(lpm.lookup(0), None);
        lpm.add(Ipv4Addr::UNSPECIFIED, 0, 7).expect("default route");
        assert_eq!(lpm.lookup(u32::MAX), Some(7));
        lpm.add(Ipv4Addr::new(1, 2, 3, 4), 32, 9)
            .expect("host route");
        assert_eq!(lpm.lookup(0x0102_0304), Some(9));
        assert_eq!(lpm.lookup(0x0102_0305), Some(7));
        // The one group is in use: another /32 elsewhere does not fit...
        let err = lpm
            .add(Ipv4Addr::new(5, 6, 7, 8), 32, 1)
            .expect_err("no group");
        assert!(matches!(err, Error::Full(_)), "{err}");
        // ...and nothing changed.
        assert_eq!(lpm.lookup(0x0506_0708), Some(7));
        // But one in the same /24 does.
        lpm.add(Ipv4Addr::new(1, 2, 3, 128), 25, 3)
            .expect("same group");
        assert_eq!(lpm.lookup(0x0102_03ff), Some(3));
        assert!(lpm.add(Ipv4Addr::UNSPECIFIED, 33, 1).is_err());
        assert!(lpm.add(Ipv4Addr::UNSPECIFIED, 1, 1 << 24).is_err());
        assert!(lpm.delete(Ipv4Addr::new(9, 9, 9, 9), 32).is_err());
        lpm.delete(Ipv4Addr::UNSPECIFIED, 0).expect("present");
        assert_eq!(lpm.lookup(0x0102_0305), None);
        assert_eq!(lpm.lookup(0x0102_0304), Some(9));
        // Deleting the /25 and /32 frees the group for another /24.
        lpm.delete(Ipv4Addr::new(1, 2, 3, 128), 25)
            .expect("present");
        lpm.delete(Ipv4Addr::new(1, 2, 3, 4), 32).expect("present");
        lpm.add(Ipv4Addr::new(5, 6, 7, 8), 32, 1)
            .expect("group free again");
        assert_eq!(lpm.lookup(0x0506_0708), Some(1));
    }
}
