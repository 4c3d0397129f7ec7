//! The CPU backend: every kernel's Rust implementation, run on the lcore
//! that polls, with the same queue semantics as the Vulkan backend.

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

/// Which CRC32C implementation this CPU runs (the `crc32c` crate picks
/// the instruction at run time).
pub(super) fn crc_impl() -> &'static str {
    if has_sse42() {
        "crc32c with the SSE4.2 instruction"
    } else {
        "crc32c in software"
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
