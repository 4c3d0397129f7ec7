// The memory layout shared by the WGSL kernels, the Vulkan backend and the
// CPU kernels. `build/shaders.rs` includes this file and turns every
// constant into a WGSL `const`, so the two sides cannot drift apart: keep it
// to plain `pub const` items of type `u32` (no inner doc comments, no `use`).

/// Invocations per workgroup of every kernel; each invocation handles one
/// item. 64 is a multiple of every desktop GPU's subgroup (32 on NVIDIA,
/// 32/64 on AMD, 8-32 on Intel, 8 on lavapipe with AVX2).
pub const WORKGROUP_SIZE: u32 = 64;

/// Words before the item table in the control binding: the item count and
/// one word of padding (so that items start on an 8-byte boundary).
pub const CTRL_HEADER_WORDS: u32 = 2;
/// Words per item in the control binding: byte offset into the data
/// binding, then byte length.
pub const CTRL_ITEM_WORDS: u32 = 2;

/// Word offset of the CRC32C table (256 words) in the parameter binding.
pub const P_CRC_TABLE: u32 = 0;
/// Word offset of the Toeplitz key, as big-endian words, in the parameter
/// binding.
pub const P_RSS_KEY: u32 = 256;
/// Bytes of the Toeplitz key: Microsoft's RSS key length, which NICs use.
pub const RSS_KEY_LEN: u32 = 40;
/// Word offset of the number of signatures in the parameter binding.
pub const P_PATTERN_COUNT: u32 = 266;
/// Word offset of the signatures: each is a length word, then
/// `MAX_PATTERN_LEN` bytes packed little-endian into words.
pub const P_PATTERNS: u32 = 267;
/// Words per signature.
pub const PATTERN_WORDS: u32 = 5;
/// The most signatures a pattern-match dispatch looks for (bits of its
/// result).
pub const MAX_PATTERNS: u32 = 8;
/// The longest signature, in bytes.
pub const MAX_PATTERN_LEN: u32 = 16;
/// Words of the parameter binding.
pub const PARAMS_WORDS: u32 = P_PATTERNS + MAX_PATTERNS * PATTERN_WORDS;

/// The result of the IPv4 kernels (and the reason an RSS hash is 0) for an
/// item that is not an untagged Ethernet II frame carrying a whole IPv4
/// header.
pub const NOT_IPV4: u32 = 0xffff_ffff;
/// Bytes of an untagged Ethernet II header: where IPv4 starts.
pub const ETH_HLEN: u32 = 14;
