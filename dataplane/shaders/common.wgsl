// The bindings every kernel shares (one descriptor set layout and one
// pipeline layout for all of them), and byte access to `data`.
//
// - `data`: the bytes the items live in: a window of an imported hugepage
//   region (zero copy) or of the submission's staging area. WGSL has no
//   8-bit type, so bytes are read out of little-endian words.
// - `ctrl`: [item count, 0, then (byte offset into data, byte length) per
//   item].
// - `out`: one word per item per dispatch of the submission; dispatch
//   `imm.stage` writes `out[imm.stage * count + item]`.
// - `params`: the CRC32C table, the Toeplitz key and the signatures, laid
//   out as src/accel/layout.rs says.

@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<storage, read> ctrl: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

struct Immediates {
    // This dispatch's position in its submission.
    stage: u32,
}
var<immediate> imm: Immediates;

fn item_count() -> u32 {
    return ctrl[0];
}

fn item_offset(i: u32) -> u32 {
    return ctrl[CTRL_HEADER_WORDS + CTRL_ITEM_WORDS * i];
}

fn item_len(i: u32) -> u32 {
    return ctrl[CTRL_HEADER_WORDS + CTRL_ITEM_WORDS * i + 1u];
}

fn store_result(i: u32, value: u32) {
    out[imm.stage * item_count() + i] = value;
}

fn load_byte(addr: u32) -> u32 {
    return (data[addr >> 2u] >> ((addr & 3u) * 8u)) & 0xffu;
}

// A big-endian 16-bit field.
fn load_be16(addr: u32) -> u32 {
    return (load_byte(addr) << 8u) | load_byte(addr + 1u);
}

// A big-endian 32-bit field.
fn load_be32(addr: u32) -> u32 {
    return (load_be16(addr) << 16u) | load_be16(addr + 2u);
}

// Replaces one byte. Items never share a word that a kernel writes (the
// IPv4 checksum sits 24 bytes into a frame of at least 34), so this
// read-modify-write races with nothing.
fn store_byte(addr: u32, value: u32) {
    let shift = (addr & 3u) * 8u;
    let w = data[addr >> 2u];
    data[addr >> 2u] = (w & ~(0xffu << shift)) | ((value & 0xffu) << shift);
}

// The IPv4 header length in bytes of the frame at `off` (`len` bytes), or 0
// when it is not an untagged Ethernet II frame carrying a whole IPv4
// header.
fn ipv4_header_len(off: u32, len: u32) -> u32 {
    if (len < ETH_HLEN + 20u) {
        return 0u;
    }
    if (load_be16(off + 12u) != 0x0800u) {
        return 0u;
    }
    let vihl = load_byte(off + ETH_HLEN);
    let ihl = (vihl & 0xfu) * 4u;
    if ((vihl >> 4u) != 4u || ihl < 20u || ETH_HLEN + ihl > len) {
        return 0u;
    }
    return ihl;
}
