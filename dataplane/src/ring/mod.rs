//! Bounded lock-free rings.

/// A ring capacity that is zero or not a power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring capacity {0} must be a non-zero power of two")]
pub struct CapacityError(pub usize);
