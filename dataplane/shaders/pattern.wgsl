// Signature match for a toy intrusion detector: bit p of the result is set
// when signature p occurs anywhere in the item.

fn pattern_byte(p: u32, k: u32) -> u32 {
    let w = params[P_PATTERNS + p * PATTERN_WORDS + 1u + (k >> 2u)];
    return (w >> ((k & 3u) * 8u)) & 0xffu;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn pattern_match(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= item_count()) {
        return;
    }
    let off = item_offset(i);
    let len = item_len(i);
    let count = min(params[P_PATTERN_COUNT], MAX_PATTERNS);
    var found = 0u;
    for (var p = 0u; p < count; p += 1u) {
        let plen = params[P_PATTERNS + p * PATTERN_WORDS];
        if (plen == 0u || plen > MAX_PATTERN_LEN || plen > len) {
            continue;
        }
        let first = pattern_byte(p, 0u);
        for (var s = 0u; s + plen <= len; s += 1u) {
            if (load_byte(off + s) != first) {
                continue;
            }
            var k = 1u;
            while (k < plen && load_byte(off + s + k) == pattern_byte(p, k)) {
                k += 1u;
            }
            if (k == plen) {
                found |= 1u << p;
                break;
            }
        }
    }
    store_result(i, found);
}
