// IPv4 header checksum (RFC 791, RFC 1071) of Ethernet II frames.

// The one's-complement sum of the header's 16-bit words, folded to 16 bits;
// the checksum field counts as zero when `skip_checksum`.
fn ipv4_sum(off: u32, ihl: u32, skip_checksum: bool) -> u32 {
    let h = off + ETH_HLEN;
    var sum = 0u;
    for (var k = 0u; k < ihl; k += 2u) {
        if (!(skip_checksum && k == 10u)) {
            sum += load_be16(h + k);
        }
    }
    sum = (sum & 0xffffu) + (sum >> 16u);
    sum = (sum & 0xffffu) + (sum >> 16u);
    return sum;
}

// 1 when the checksum is right, 0 when not, NOT_IPV4 for other frames.
@compute @workgroup_size(WORKGROUP_SIZE)
fn ipv4_verify(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= item_count()) {
        return;
    }
    let off = item_offset(i);
    let ihl = ipv4_header_len(off, item_len(i));
    if (ihl == 0u) {
        store_result(i, NOT_IPV4);
        return;
    }
    store_result(i, select(0u, 1u, ipv4_sum(off, ihl, false) == 0xffffu));
}

// Writes the right checksum into the header and returns it; NOT_IPV4 (and
// nothing written) for other frames.
@compute @workgroup_size(WORKGROUP_SIZE)
fn ipv4_update(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= item_count()) {
        return;
    }
    let off = item_offset(i);
    let ihl = ipv4_header_len(off, item_len(i));
    if (ihl == 0u) {
        store_result(i, NOT_IPV4);
        return;
    }
    let csum = ~ipv4_sum(off, ihl, true) & 0xffffu;
    store_byte(off + ETH_HLEN + 10u, csum >> 8u);
    store_byte(off + ETH_HLEN + 11u, csum);
    store_result(i, csum);
}
