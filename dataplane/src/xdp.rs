//! The kernel's XDP interfaces as the AF_XDP backend (`net::af_xdp`) and
//! its probe use them: the AF_XDP socket itself, and, through the `bpf(2)`
//! system call alone,
//! an `XSKMAP`, a five-instruction program that redirects every frame of
//! a queue with a socket into it, and a BPF link that attaches the program
//! to the interface for as long as its file descriptor lives.
//!
//! The program is what libxdp's default program does when it has one
//! socket per queue, written as instructions rather than compiled C, so no
//! clang, bpf-linker or libbpf is needed at build or run time:
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)        ; ctx->rx_queue_index
//! r1 = map_fd ll                ; the XSKMAP (a pseudo map-fd load)
//! r3 = XDP_PASS                 ; the action when the slot is empty
//! call bpf_redirect_map         ; to the queue's socket, else pass
//! exit                          ; r0: XDP_REDIRECT or XDP_PASS
//! ```
//!
//! Frames of a queue with no socket go up the kernel's stack unchanged
//! (the flags argument of `bpf_redirect_map` is the fallback action since
//! Linux 5.3). The link (`BPF_LINK_CREATE`, Linux 5.9) detaches the program
//! when the last queue of the port closes, even if the process dies, and
//! refuses to replace a program someone else attached.

use crate::backend::Probe;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A new AF_XDP socket, unbound.
pub(crate) fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; it returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether AF_XDP ports can be opened here: an AF_XDP socket and an
/// `XSKMAP` are made and closed again (the `xdp` capability).
pub(crate) fn probe() -> Probe {
    match socket() {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            return Probe::unavailable(
                "the kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS, EAFNOSUPPORT)",
            );
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            return Probe::unavailable("AF_XDP sockets need CAP_NET_RAW (EPERM)");
        }
        Err(e) => return Probe::unavailable(format!("AF_XDP socket failed: {e}")),
    }
    match xskmap(1) {
        Ok(_) => Probe::ok("AF_XDP sockets and XSKMAP maps can be made"),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            Probe::unavailable("BPF maps for AF_XDP need CAP_BPF or CAP_SYS_ADMIN (EPERM)")
        }
        Err(e) => Probe::unavailable(format!("no XSKMAP: bpf(BPF_MAP_CREATE) failed: {e}")),
    }
}

// enum bpf_cmd (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`.
const BPF_XDP: u32 = 37;
/// `src_reg` of a 64-bit immediate load whose immediate is a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

/// `XDP_FLAGS_SKB_MODE`: the generic hook, after the skb is built; every
/// interface has it.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: the driver's own hook, before any skb (veth,
/// and NIC drivers with XDP support).
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    /// `dst_reg` in the low nibble, `src_reg` in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program, for the map `map_fd` (see the module docs).
fn program(map_fd: i32) -> [Insn; 6] {
    [
        // BPF_LDX | BPF_MEM | BPF_W: r2 = *(u32 *)(r1 + 16).
        insn(0x61, 2, 1, 16, 0),
        // BPF_LD | BPF_IMM | BPF_DW, two slots: r1 = the map.
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // BPF_ALU64 | BPF_MOV | BPF_K: r3 = XDP_PASS.
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // BPF_JMP | BPF_CALL.
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // BPF_JMP | BPF_EXIT.
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// The `BPF_MAP_CREATE` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `BPF_MAP_*_ELEM` member.
#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `BPF_PROG_LOAD` member, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_LINK_CREATE` member, up to `flags`.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr, sizeof *attr)`.
///
/// # Safety
/// `T` is the member of `union bpf_attr` that `cmd` reads, and every
/// pointer in it is valid for what the command does with it.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the kernel reads (and for some
    // commands writes) at most `size_of::<T>()` bytes of `attr`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A command's result as the new file descriptor it is.
fn owned(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(rc).map_err(|_| io::Error::other("bpf(2) returned no fd"))?;
    // SAFETY: the command returns a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (d, s) in out.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    out
}

/// Creates an `XSKMAP` with `entries` slots (one per queue).
pub(crate) fn xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries.max(1),
        map_name: name16("dp_xsks"),
        ..MapCreate::default()
    };
    // SAFETY: MapCreate is BPF_MAP_CREATE's member and holds no pointers.
    owned(unsafe { bpf(BPF_MAP_CREATE, &mut attr) }?)
}

/// Puts the socket `xsk` in slot `queue` of the map.
pub(crate) fn xskmap_set(map: BorrowedFd<'_>, queue: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
    let key = queue;
    let value = xsk.as_raw_fd() as u32;
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: std::ptr::from_ref(&key).addr() as u64,
        value: std::ptr::from_ref(&value).addr() as u64,
        ..MapElem::default()
    };
    // SAFETY: MapElem is BPF_MAP_UPDATE_ELEM's member; `key` and `value`
    // are live u32s, the map's key and value sizes.
    unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
}

/// Loads the program for `map`. On a refusal the error carries the
/// verifier's log.
pub(crate) fn load_program(map: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let insns = program(map.as_raw_fd());
    let license: &CStr = c"GPL";
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr().addr() as u64,
            license: license.as_ptr().addr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr().addr() as u64
            },
            prog_name: name16("dp_xsk_redirect"),
            ..ProgLoad::default()
        };
        // SAFETY: ProgLoad is BPF_PROG_LOAD's member; `insns`, `license`
        // and `log` outlive the call, with the lengths given.
        unsafe { bpf(BPF_PROG_LOAD, &mut attr) }.and_then(owned)
    };
    load(&mut []).or_else(|first| {
        let mut log = vec![0u8; 16 * 1024];
        match load(&mut log) {
            Ok(fd) => Ok(fd),
            Err(_) => {
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                Err(io::Error::new(
                    first.kind(),
                    format!("{first}; verifier: {}", text.trim()),
                ))
            }
        }
    })
}

/// Attaches `prog` to interface `ifindex` in the mode `flags` names,
/// through a BPF link: detached when the returned fd closes.
pub(crate) fn attach(prog: BorrowedFd<'_>, ifindex: i32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex as u32,
        attach_type: BPF_XDP,
        flags,
    };
    // SAFETY: LinkCreate is BPF_LINK_CREATE's member; no pointers.
    owned(unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_is_encoded_as_the_kernel_reads_it() {
        let p = program(7);
        // `struct bpf_insn` is 8 bytes; the map load spans two.
        assert_eq!(size_of::<Insn>(), 8);
        assert_eq!((p[0].code, p[0].regs, p[0].off), (0x61, 0x12, 16));
        assert_eq!((p[1].code, p[1].regs, p[1].imm), (0x18, 0x11, 7));
        assert_eq!((p[2].code, p[2].regs, p[2].imm), (0, 0, 0));
        assert_eq!((p[3].regs, p[3].imm), (3, XDP_PASS));
        assert_eq!(p[4].imm, BPF_FUNC_REDIRECT_MAP);
        assert_eq!(p[5].code, 0x95);
        assert_eq!(size_of::<ProgLoad>(), 72);
        assert_eq!(size_of::<MapCreate>(), 44);
    }
}
