// CRC32C (Castagnoli, reflected, as iSCSI, ext4 and NVMe use it) of each
// item: the table-driven byte loop, one word loaded per four bytes.

fn crc_byte(crc: u32, byte: u32) -> u32 {
    return params[P_CRC_TABLE + ((crc ^ byte) & 0xffu)] ^ (crc >> 8u);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn crc32c(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= item_count()) {
        return;
    }
    let off = item_offset(i);
    let end = off + item_len(i);
    var crc = 0xffffffffu;
    var a = off;
    // Up to the first word boundary, then whole words, then the tail.
    while (a < end && (a & 3u) != 0u) {
        crc = crc_byte(crc, load_byte(a));
        a += 1u;
    }
    while (a + 4u <= end) {
        let w = data[a >> 2u];
        crc = crc_byte(crc, w);
        crc = crc_byte(crc, w >> 8u);
        crc = crc_byte(crc, w >> 16u);
        crc = crc_byte(crc, w >> 24u);
        a += 4u;
    }
    while (a < end) {
        crc = crc_byte(crc, load_byte(a));
        a += 1u;
    }
    store_result(i, ~crc);
}
