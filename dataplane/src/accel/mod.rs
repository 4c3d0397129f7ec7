//! Accelerator compute queues owned by lcores: Vulkan through `ash` (a real
//! GPU, or lavapipe on the CPU), with the CPU running the same kernels as
//! the fallback.
//!
//! An accelerator lcore owns a [`Queue`] the way an I/O lcore owns a NIC
//! queue: it takes a batch of items (packets, blocks) from its inbound
//! ring, [`submit`](Queue::submit)s one or more [`Kernel`]s over them, and
//! [`poll`](Queue::poll)s for completions in its run-to-completion loop.
//! Neither call blocks; several submissions are in flight at once; the
//! Vulkan backend learns of completions from a timeline semaphore (or one
//! fence per submission where the device has no timeline semaphores).
//!
//! ```
//! use dataplane::accel::{Buffers, Completion, Kernel, Queue, QueueConfig};
//!
//! // Vulkan when a device is there, else the CPU (the reason is logged,
//! // and a failure when DATAPLANE_REQUIRE names vulkan).
//! let mut queue = Queue::<Vec<Vec<u8>>>::open(QueueConfig::default())?;
//! let items = vec![b"123456789".to_vec(), vec![0u8; 32]];
//! let workgroups = dataplane::accel::workgroups_for(items.len());
//! queue
//!     .submit(Kernel::Crc32c, Buffers::new(items), workgroups, 7)
//!     .map_err(|r| r.reason)
//!     .expect("an empty queue takes a submission");
//! let mut done: Vec<Completion<Vec<Vec<u8>>>> = Vec::new();
//! while queue.poll(&mut done) == 0 {}
//! assert_eq!(done[0].tag, 7);
//! assert_eq!(done[0].buffers.results, [0xe306_9283, 0x8a91_36aa]);
//! println!("ran on {} ({:?})", queue.info().device, done[0].path);
//! # Ok::<(), dataplane::Error>(())
//! ```
//!
//! **Buffers.** A submission's items stay where they are when they lie in
//! memory registered with the queue ([`Queue::register`]: a mbuf pool, a
//! mempool, a hugepage region) and the device supports
//! `VK_EXT_external_memory_host`: the region is imported as a Vulkan
//! storage buffer once, and the kernel reads the very bytes the NIC or NVMe
//! path filled ([`BufferPath::Imported`]). Otherwise the queue copies the
//! items into host-visible device memory before the dispatch, and back after
//! it for a kernel that writes ([`BufferPath::Staged`]). Every completion
//! says which path it took; [`QueueStats`] counts the bytes each way.
//!
//! **Kernels** are written once in WGSL (`dataplane/shaders/`), compiled to
//! SPIR-V when the crate builds (naga, in `build/shaders.rs`), and written
//! again in Rust ([`kernel`]): the CPU backend runs those, and the tests
//! hold every device result to them.
//!
//! **Lifetime.** Dropping a queue waits for the device to go idle, hands
//! every in-flight payload back to its owner's drop (mbufs return to their
//! pools), then destroys every Vulkan object in reverse order of creation,
//! and only then releases the registered memory.
// Unsafe code lives in the backends (`vulkan`, `cpu`) and in the `Payload`
// implementations, each of which allows it for itself.

mod buffers;
mod config;
mod cpu;
mod error;
pub mod kernel;
mod layout;
#[allow(unsafe_code)]
mod payload;
mod queue;
mod shaders;
#[allow(unsafe_code)]
mod vulkan;

pub use buffers::{BufferPath, Buffers, Completion, HostMemory, Registration};
pub use config::{BackendChoice, BackendKind, DeviceSelector, QueueConfig, SyncMode};
pub use error::{DeviceError, Rejected, SubmitError};
pub(crate) use queue::check_submission;
pub use queue::{Queue, QueueInfo, QueueStats};

pub use kernel::{
    DEFAULT_PATTERNS, Kernel, Kernels, MAX_KERNELS, MAX_PATTERN_LEN, MAX_PATTERNS,
    MICROSOFT_RSS_KEY, NOT_IPV4, Params,
};
pub use payload::Payload;
#[doc(hidden)]
pub use vulkan::BareLoop;
pub use vulkan::{
    DebugMessages, DeviceInfo, DeviceType, Discovery, HeapInfo, QueueFamilyInfo, debug_messages,
    discover,
};

use crate::backend::{self, BackendProbe, Candidates, Choice, Kind, Probe};
use crate::require::{self, Capability, Requirements};
use crate::{Error, Result};
use hugepages::mbuf::MbufPool;
use hugepages::mempool::Mempool;
use hugepages::region::Region;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Invocations per workgroup of every kernel; one item per invocation.
pub const WORKGROUP_SIZE: u32 = layout::WORKGROUP_SIZE;

/// The workgroups that cover `items` items.
pub const fn workgroups_for(items: usize) -> u32 {
    items.div_ceil(WORKGROUP_SIZE as usize) as u32
}

/// The environment variable naming the Vulkan loader to open instead of
/// the system's `libvulkan.so.1` (a path or a library name).
pub const LOADER_ENV: &str = "DATAPLANE_VULKAN_LOADER";

// ------------------------------------------------------------- probes

/// Whether a Vulkan device with a compute queue can be opened here, and
/// what was found.
pub fn probe() -> Probe {
    vulkan::probe(&discover())
}

/// Every accelerator backend, in selection order, with whether it can run
/// here.
pub fn probes() -> Vec<BackendProbe> {
    vec![
        BackendProbe {
            subsystem: "accel",
            backend: BackendKind::Vulkan.name(),
            probe: probe(),
        },
        BackendProbe {
            subsystem: "accel",
            backend: BackendKind::Cpu.name(),
            probe: Probe::ok(format!(
                "every kernel on the CPU of the calling lcore ({})",
                cpu::crc_impl()
            )),
        },
    ]
}

#[cfg(test)]
mod tests;
