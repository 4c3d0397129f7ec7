//! The CPU backend: every kernel's Rust implementation, run on the lcore
//! that polls, with the same queue semantics as the Vulkan backend.
// One unsafe block: calling the SSE4.2 CRC32C after checking that the CPU
// has the instruction.
#![allow(unsafe_code)]

use super::kernel::Params;
use super::{
    BufferPath, Buffers, Completion, Kernels, Payload, QueueConfig, QueueStats, Rejected,
    SubmitError,
};
use std::collections::VecDeque;

struct Pending<P> {
    kernels: Kernels,
    buffers: Buffers<P>,
    tag: u64,
}

/// Submissions wait in order; `poll` runs them all.
pub(super) struct CpuQueue<P> {
    params: Params,
    depth: usize,
    max_items: usize,
    pending: VecDeque<Pending<P>>,
    stats: QueueStats,
}

impl<P: Payload> CpuQueue<P> {
    pub(super) fn new(config: &QueueConfig) -> Self {
        CpuQueue {
            params: config.params.clone(),
            depth: config.depth,
            max_items: config.max_items,
            pending: VecDeque::with_capacity(config.depth),
            stats: QueueStats::default(),
        }
    }

    pub(super) fn stats(&self) -> QueueStats {
        self.stats
    }

    pub(super) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn submit(
        &mut self,
        kernels: Kernels,
        buffers: Buffers<P>,
        workgroups: u32,
        tag: u64,
    ) -> Result<(), Rejected<P>> {
        let items = buffers.items.item_count();
        let checked = if self.pending.len() >= self.depth {
            Err(SubmitError::Full(self.pending.len()))
        } else {
            super::check_submission(items, workgroups, self.max_items, u32::MAX)
        };
        if let Err(reason) = checked {
            return Err(Rejected { reason, buffers });
        }
        self.stats.submitted += 1;
        self.pending.push_back(Pending {
            kernels,
            buffers,
            tag,
        });
        Ok(())
    }

    pub(super) fn poll(&mut self, out: &mut Vec<Completion<P>>) -> usize {
        let n = self.pending.len();
        while let Some(Pending {
            kernels,
            mut buffers,
            tag,
        }) = self.pending.pop_front()
        {
            let items = buffers.items.item_count();
            buffers.results.clear();
            buffers.results.reserve(items * kernels.len());
            for &k in kernels.as_slice() {
                for i in 0..items {
                    let r = k.run_cpu(&self.params, buffers.items.item_mut(i));
                    buffers.results.push(r);
                }
            }
            self.stats.completed += 1;
            out.push(Completion {
                tag,
                kernels,
                buffers,
                path: BufferPath::Host,
                status: Ok(()),
            });
        }
        n
    }
}

/// The CPU's model name, from /proc/cpuinfo.
pub(super) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// Which CRC32C implementation this CPU runs.
pub(super) fn crc_impl() -> &'static str {
    if has_sse42() {
        "crc32c with the SSE4.2 instruction"
    } else {
        "crc32c by slicing-by-8"
    }
}

fn has_sse42() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sse4.2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Continues a CRC32C (pre- and post-inversion are the caller's).
pub(super) fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if has_sse42() {
        // SAFETY: the CPU has SSE4.2, checked just above (the detection
        // result is cached by std).
        return unsafe { crc32c_sse42(crc, bytes) };
    }
    crc32c_slice8(crc, bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn crc32c_sse42(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u8, _mm_crc32_u64};
    let mut c = u64::from(crc);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    c
}

fn slice8_tables() -> &'static [[u32; 256]; 8] {
    static TABLES: std::sync::OnceLock<[[u32; 256]; 8]> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = [[0u32; 256]; 8];
        t[0] = super::kernel::crc32c_table();
        for i in 0..256 {
            for k in 1..8 {
                let prev = t[k - 1][i];
                t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            }
        }
        t
    })
}

fn crc32c_slice8(crc: u32, bytes: &[u8]) -> u32 {
    let t = slice8_tables();
    let mut c = crc;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let lo = c ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(w[4])]
            ^ t[2][usize::from(w[5])]
            ^ t[1][usize::from(w[6])]
            ^ t[0][usize::from(w[7])];
    }
    for &b in words.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicing_by_8_equals_bytewise() {
        let data: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(7919) >> 3) as u8)
            .collect();
        for len in [0, 1, 7, 8, 9, 100, 2999] {
            let s = &data[..len];
            assert_eq!(
                !crc32c_slice8(!0, s),
                super::super::kernel::crc32c_bytewise(s)
            );
        }
    }
}
