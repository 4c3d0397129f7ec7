// The Toeplitz hash NICs compute for receive-side scaling (Microsoft's RSS
// specification): over source and destination address, then source and
// destination port for unfragmented TCP and UDP; over the addresses alone
// for other IPv4; 0 for frames that are not IPv4 (a NIC reports no hash).

// The 32 key bits starting at bit `bit` (big-endian bit order).
fn key_window(bit: u32) -> u32 {
    let w = bit >> 5u;
    let s = bit & 31u;
    let hi = params[P_RSS_KEY + w];
    if (s == 0u) {
        return hi;
    }
    let lo = params[P_RSS_KEY + w + 1u];
    return (hi << s) | (lo >> (32u - s));
}

// Folds one big-endian input word, whose first bit is key bit `bit`.
fn toeplitz_word(hash: u32, word: u32, bit: u32) -> u32 {
    var h = hash;
    for (var b = 0u; b < 32u; b += 1u) {
        if ((word & (0x80000000u >> b)) != 0u) {
            h ^= key_window(bit + b);
        }
    }
    return h;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn rss_hash(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= item_count()) {
        return;
    }
    let off = item_offset(i);
    let len = item_len(i);
    let ihl = ipv4_header_len(off, len);
    if (ihl == 0u) {
        store_result(i, 0u);
        return;
    }
    let ip = off + ETH_HLEN;
    var h = toeplitz_word(0u, load_be32(ip + 12u), 0u);
    h = toeplitz_word(h, load_be32(ip + 16u), 32u);
    let proto = load_byte(ip + 9u);
    // More-fragments flag or a fragment offset: no ports to hash.
    let fragment = (load_be16(ip + 6u) & 0x3fffu) != 0u;
    let l4 = ETH_HLEN + ihl;
    if ((proto == 6u || proto == 17u) && !fragment && l4 + 4u <= len) {
        h = toeplitz_word(h, load_be32(off + l4), 64u);
    }
    store_result(i, h);
}
