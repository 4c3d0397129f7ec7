//! The fanout program of a multi-queue AF_PACKET port: classic BPF that
//! picks the queue of each received frame from its addresses and ports.
//!
//! The kernel's own `PACKET_FANOUT_HASH` spreads flows by the skb's flow
//! hash, which is keyed by a secret chosen at boot: no program can tell
//! which queue a flow's replies will reach, so a TCP stack on one queue
//! that connects out would see its SYN-ACK delivered to another queue's
//! stack, which knows nothing of it. With `PACKET_FANOUT_CBPF` the queue
//! is ours to compute, [`Steering::Mix`]: the addresses XORed together
//! and the ports XORed together, each so that both directions of a flow
//! give the same word, then mixed by two multiplications so that
//! addresses and ports that rise together (10.0.0.1:1001, 10.0.0.2:1002)
//! do not cancel out:
//!
//! - IPv4 TCP or UDP, not a fragment: both addresses and both ports;
//! - other IPv4 (and every fragment, so that the pieces of one datagram
//!   stay together): the addresses, ports counted as 0;
//! - IPv6: the eight address words, and the ports when the next header is
//!   TCP or UDP (extension headers are not walked);
//! - anything else (ARP, LLDP): queue 0.
//!
//! About 60 instructions, built here and handed to the kernel with
//! `PACKET_FANOUT_DATA`: nothing to compile. The tests run it in an
//! interpreter of their own against [`Steering::queue_v4`], and the
//! AF_PACKET tests over veth check that the kernel agrees.
//!
//! [`Steering::Mix`]: crate::wire::rss::Steering::Mix
//! [`Steering::queue_v4`]: crate::wire::rss::Steering::queue_v4

use crate::wire::rss::{ADDR_MUL, MIX_MUL};
use libc::sock_filter;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const LD_H_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
const LD_B_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const LD_H_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
const LD_MEM: u16 = (libc::BPF_LD | libc::BPF_MEM) as u16;
const LD_IMM: u16 = (libc::BPF_LD | libc::BPF_IMM) as u16;
const LDX_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
const ST: u16 = libc::BPF_ST as u16;
const LDX_MEM: u16 = (libc::BPF_LDX | libc::BPF_W | libc::BPF_MEM) as u16;
const MUL_K: u16 = (libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K) as u16;
const TAX: u16 = (libc::BPF_MISC | libc::BPF_TAX) as u16;
const XOR_X: u16 = (libc::BPF_ALU | libc::BPF_XOR | libc::BPF_X) as u16;
const RSH_K: u16 = (libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K) as u16;
const MOD_K: u16 = (libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_A: u16 = (libc::BPF_RET | libc::BPF_A) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// A load's offset from the network header. On receive the kernel runs
/// the fanout program with the skb's data at the network header, on
/// transmit at the link header; the `SKF_NET_OFF` base means the same
/// byte either way.
const fn net(off: i32) -> u32 {
    (libc::SKF_NET_OFF + off) as u32
}

/// The ancillary load of the skb's protocol: the ethertype, host order.
const PROTOCOL: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32;

/// Where a jump goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    Next,
    Ipv4Ports,
    Ipv4NoPorts,
    Ipv4Addrs,
    Ipv6,
    Ipv6Ports,
    Ipv6NoPorts,
    Ipv6Addrs,
    Mix,
    Other,
}

enum Ins {
    Stmt(u16, u32),
    Jump(u16, u32, Label, Label),
    Always(Label),
    Here(Label),
}

/// A jump of `from`'s to `to`, as an offset from the instruction after.
fn offset(labels: &[(Label, usize)], from: usize, to: Label) -> Option<usize> {
    if to == Label::Next {
        return Some(0);
    }
    let at = labels.iter().find(|(l, _)| *l == to)?.1;
    at.checked_sub(from + 1)
}

/// The program for `queues` queues: M[0] holds the ports' XOR (0 where
/// there are none), A the addresses' XOR, then the mix.
pub(super) fn program(queues: u16) -> Vec<sock_filter> {
    use Ins::{Always, Here, Jump, Stmt};
    use Label::{
        Ipv4Addrs, Ipv4NoPorts, Ipv4Ports, Ipv6, Ipv6Addrs, Ipv6NoPorts, Ipv6Ports, Mix, Next,
        Other,
    };
    let mut src = vec![
        Stmt(LD_H_ABS, PROTOCOL), // the ethertype
        Jump(JEQ_K, 0x86dd, Ipv6, Next),
        Jump(JEQ_K, 0x0800, Next, Other),
        Stmt(LD_B_ABS, net(9)), // IPv4 protocol
        Jump(JEQ_K, 6, Ipv4Ports, Next),
        Jump(JEQ_K, 17, Ipv4Ports, Ipv4NoPorts),
        Here(Ipv4Ports),
        Stmt(LD_H_ABS, net(6)), // flags and fragment offset
        Jump(JSET_K, 0x3fff, Ipv4NoPorts, Next),
        Stmt(LDX_MSH, net(0)),  // X = the IPv4 header's length
        Stmt(LD_H_IND, net(0)), // source port
        Stmt(ST, 0),
        Stmt(LD_H_IND, net(2)), // destination port
        Stmt(TAX, 0),
        Stmt(LD_MEM, 0),
        Stmt(XOR_X, 0),
        Stmt(ST, 0),
        Always(Ipv4Addrs),
        Here(Ipv4NoPorts),
        Stmt(LD_IMM, 0),
        Stmt(ST, 0),
        Here(Ipv4Addrs),
        Stmt(LD_W_ABS, net(12)), // source address
        Stmt(TAX, 0),
        Stmt(LD_W_ABS, net(16)), // destination address
        Stmt(XOR_X, 0),
        Always(Mix),
        Here(Ipv6),
        Stmt(LD_B_ABS, net(6)), // next header
        Jump(JEQ_K, 6, Ipv6Ports, Next),
        Jump(JEQ_K, 17, Ipv6Ports, Ipv6NoPorts),
        Here(Ipv6Ports),
        Stmt(LD_H_ABS, net(40)),
        Stmt(TAX, 0),
        Stmt(LD_H_ABS, net(42)),
        Stmt(XOR_X, 0),
        Stmt(ST, 0),
        Always(Ipv6Addrs),
        Here(Ipv6NoPorts),
        Stmt(LD_IMM, 0),
        Stmt(ST, 0),
        Here(Ipv6Addrs),
        Stmt(LD_W_ABS, net(8)),
    ];
    for w in 1..8 {
        src.push(Stmt(TAX, 0));
        src.push(Stmt(LD_W_ABS, net(8 + 4 * w)));
        src.push(Stmt(XOR_X, 0));
    }
    src.extend([
        Here(Mix),
        Stmt(MUL_K, ADDR_MUL),
        Stmt(LDX_MEM, 0),
        Stmt(XOR_X, 0),
        Stmt(MUL_K, MIX_MUL),
        Stmt(RSH_K, 16),
        Stmt(MOD_K, u32::from(queues.max(1))),
        Stmt(RET_A, 0),
        Here(Other),
        Stmt(RET_K, 0),
    ]);
    assemble(&src)
}

/// Resolves the labels. Every label is defined and every jump goes
/// forward (cBPF has no other kind), which the tests check by running
/// the result.
fn assemble(src: &[Ins]) -> Vec<sock_filter> {
    let mut labels = Vec::new();
    let mut pc = 0;
    for ins in src {
        match ins {
            Ins::Here(l) => labels.push((*l, pc)),
            _ => pc += 1,
        }
    }
    let mut out = Vec::with_capacity(pc);
    for ins in src {
        let at = out.len();
        let f = match *ins {
            Ins::Here(_) => continue,
            Ins::Stmt(code, k) => sock_filter {
                code,
                jt: 0,
                jf: 0,
                k,
            },
            Ins::Jump(code, k, t, f) => sock_filter {
                code,
                jt: jump8(&labels, at, t),
                jf: jump8(&labels, at, f),
                k,
            },
            Ins::Always(to) => sock_filter {
                code: JA,
                jt: 0,
                jf: 0,
                k: offset(&labels, at, to).unwrap_or(0) as u32,
            },
        };
        out.push(f);
    }
    out
}

fn jump8(labels: &[(Label, usize)], at: usize, to: Label) -> u8 {
    offset(labels, at, to).map_or(0, |o| u8::try_from(o).unwrap_or(u8::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rss::Steering;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// A classic-BPF interpreter for the instructions the program uses,
    /// with the kernel's rule that a load past the packet returns 0.
    fn run(prog: &[sock_filter], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        // Test frames start with a 14-byte Ethernet header.
        let load = |k: u32, n: usize| -> Option<u32> {
            let at = if k == PROTOCOL {
                12
            } else {
                usize::try_from(k.wrapping_sub(net(0))).ok()? + 14
            };
            let b = pkt.get(at..at + n)?;
            Some(b.iter().fold(0, |v, &b| (v << 8) | u32::from(b)))
        };
        let mut pc = 0;
        loop {
            let i = prog[pc];
            pc += 1;
            let k = i.k;
            match i.code {
                LD_W_ABS | LD_H_ABS | LD_B_ABS => {
                    let n = match i.code {
                        LD_W_ABS => 4,
                        LD_H_ABS => 2,
                        _ => 1,
                    };
                    let Some(v) = load(k, n) else { return 0 };
                    a = v;
                }
                LD_H_IND => {
                    let Some(v) = load(k.wrapping_add(x), 2) else {
                        return 0;
                    };
                    a = v;
                }
                LD_MEM => a = mem[k as usize],
                LD_IMM => a = k,
                LDX_MSH => {
                    let Some(v) = load(k, 1) else { return 0 };
                    x = 4 * (v & 0xf);
                }
                LDX_MEM => x = mem[k as usize],
                MUL_K => a = a.wrapping_mul(k),
                ST => mem[k as usize] = a,
                TAX => x = a,
                XOR_X => a ^= x,
                RSH_K => a >>= k,
                MOD_K => a %= k,
                JEQ_K => pc += usize::from(if a == k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & k != 0 { i.jt } else { i.jf }),
                JA => pc += k as usize,
                RET_A => return a,
                RET_K => return k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn ipv4(proto: u8, frag: u16, src: Ipv4Addr, dst: Ipv4Addr, sp: u16, dp: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 24 + 8];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x46; // a 24-byte header: the ports move with IHL
        f[14 + 6..14 + 8].copy_from_slice(&frag.to_be_bytes());
        f[14 + 9] = proto;
        f[26..30].copy_from_slice(&src.octets());
        f[30..34].copy_from_slice(&dst.octets());
        f[38..40].copy_from_slice(&sp.to_be_bytes());
        f[40..42].copy_from_slice(&dp.to_be_bytes());
        f
    }

    #[test]
    fn ipv4_tcp_and_udp_go_where_steering_says() {
        for queues in [2u16, 3, 4, 7] {
            let prog = program(queues);
            let steer = Steering::Mix { queues };
            let (a, b) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2));
            for port in 30_000..30_200u16 {
                for proto in [6, 17] {
                    let q = run(&prog, &ipv4(proto, 0x4000, b, a, 80, port));
                    assert_eq!(
                        q,
                        u32::from(steer.queue_v4(b, a, 80, port)),
                        "{queues} {port}"
                    );
                    let back = run(&prog, &ipv4(proto, 0x4000, a, b, port, 80));
                    assert_eq!(q, back, "symmetric");
                }
            }
        }
    }

    #[test]
    fn fragments_and_other_protocols_hash_the_addresses_only() {
        let prog = program(5);
        let (a, b) = (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
        // Ports 0 stand for "no ports" in the steering function.
        let want = u32::from(Steering::Mix { queues: 5 }.queue_v4(a, b, 0, 0));
        // ICMP, a first fragment (MF) and a later one: the same queue.
        for (proto, frag) in [(1, 0), (17, 0x2000), (17, 0x0010), (6, 0x2000)] {
            assert_eq!(run(&prog, &ipv4(proto, frag, a, b, 9, 9)), want);
        }
    }

    #[test]
    fn ipv6_spreads_symmetrically_and_the_rest_go_to_queue_zero() {
        let prog = program(4);
        let v6 = |src: Ipv6Addr, dst: Ipv6Addr, sp: u16, dp: u16| {
            let mut f = vec![0u8; 14 + 40 + 8];
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            f[14] = 0x60;
            f[20] = 17;
            f[22..38].copy_from_slice(&src.octets());
            f[38..54].copy_from_slice(&dst.octets());
            f[54..56].copy_from_slice(&sp.to_be_bytes());
            f[56..58].copy_from_slice(&dp.to_be_bytes());
            f
        };
        let (a, b) = ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap());
        let mut seen = [0; 4];
        for port in 1000..1400u16 {
            let q = run(&prog, &v6(a, b, port, 53));
            assert_eq!(q, run(&prog, &v6(b, a, 53, port)));
            seen[q as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(run(&prog, &arp), 0);
        assert_eq!(run(&prog, &[0u8; 10]), 0, "a runt");
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        let prog = program(3);
        for (i, f) in prog.iter().enumerate() {
            let targets: &[usize] = if f.code == JA {
                &[f.k as usize]
            } else if f.code == JEQ_K || f.code == JSET_K {
                &[usize::from(f.jt), usize::from(f.jf)]
            } else {
                &[]
            };
            for t in targets {
                assert!(i + 1 + t < prog.len(), "instruction {i} jumps out");
            }
        }
        assert!(prog.len() < 80);
    }
}
