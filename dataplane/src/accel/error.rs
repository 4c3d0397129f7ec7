//! Why a submission was refused, and a failed or lost device.

use super::*;

/// A Vulkan call that failed, or the loss of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device was lost (`VK_ERROR_DEVICE_LOST`): a hang, a reset, a
    /// removed GPU. The queue completes everything in flight with this
    /// error and refuses new work.
    #[error("accelerator device lost ({call} returned VK_ERROR_DEVICE_LOST)")]
    Lost {
        /// The call that reported it.
        call: &'static str,
    },
    /// Another failure.
    #[error("{call} failed: {}", vulkan::result_name(*code))]
    Vulkan {
        /// The Vulkan function.
        call: &'static str,
        /// Its `VkResult`.
        code: i32,
    },
}

/// Why a submission was refused; the buffers come back in [`Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// As many submissions as the queue's depth are in flight: poll first.
    #[error("the queue is full ({0} submissions in flight)")]
    Full(usize),
    /// More items than the queue was opened for.
    #[error("{items} items; the queue takes at most {max} per submission")]
    TooManyItems {
        /// Items given.
        items: usize,
        /// [`QueueConfig::max_items`].
        max: usize,
    },
    /// The items need more staging space than a submission has.
    #[error("{bytes} bytes to stage; a submission has {max}")]
    TooLarge {
        /// Bytes needed (each item rounded up to 4).
        bytes: usize,
        /// [`QueueConfig::staging_bytes`].
        max: usize,
    },
    /// The workgroups do not cover the items, or exceed the device's limit.
    #[error("{workgroups} workgroups for {items} items (need {needed} to {max})")]
    Workgroups {
        /// Given.
        workgroups: u32,
        /// Items.
        items: usize,
        /// The least that covers the items.
        needed: u32,
        /// The device's `maxComputeWorkGroupCount[0]`.
        max: u32,
    },
    /// The device failed or was lost.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// A refused submission: why, and the buffers handed back untouched.
#[derive(Debug)]
pub struct Rejected<P> {
    /// Why.
    pub reason: SubmitError,
    /// The buffers, as they were given.
    pub buffers: Buffers<P>,
}
