//! PCI addresses, as DPDK, SPDK and sysfs write them.

use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A PCI function's address: `domain:bus:device.function`, in hex.
///
/// Parses `0000:03:00.0` and, as DPDK's `rte_pci_addr_parse` accepts,
/// `03:00.0` with the domain left out (domain 0). Displays as sysfs names
/// the function: `0000:03:00.0`.
///
/// ```
/// use dataplane::topology::PciAddress;
///
/// let a: PciAddress = "af:00.1".parse()?;
/// assert_eq!(a.to_string(), "0000:af:00.1");
/// assert_eq!(a, "0000:AF:00.1".parse()?);
/// assert!("0000:03:00".parse::<PciAddress>().is_err());
/// assert!("0000:03:20.0".parse::<PciAddress>().is_err()); // devices are 0 to 1f
/// # Ok::<(), dataplane::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// The PCI domain (segment), 0 to ffff.
    pub domain: u16,
    /// The bus, 0 to ff.
    pub bus: u8,
    /// The device, 0 to 1f.
    pub device: u8,
    /// The function, 0 to 7.
    pub function: u8,
}

impl PciAddress {
    /// Parses the full form only (`0000:03:00.0`), as sysfs names PCI
    /// functions; `None` for anything else.
    pub fn from_sysfs(name: &str) -> Option<Self> {
        if name.len() == 12 {
            name.parse().ok()
        } else {
            None
        }
    }
}

impl FromStr for PciAddress {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = |why: &str| crate::Error::Config(format!("PCI address {s:?}: {why}"));
        // Fields of exactly `len` hex digits (DPDK allows fewer; sysfs and
        // lspci always write them full, and a short field is more often a
        // typo than an intent).
        let hex = |p: &str, len: usize| -> Option<u32> {
            (p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(p, 16).ok())
                .flatten()
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [domain, bus, devfn] => (
                hex(domain, 4).ok_or_else(|| bad("the domain is not 4 hex digits"))?,
                *bus,
                *devfn,
            ),
            [bus, devfn] => (0, *bus, *devfn),
            _ => return Err(bad("expected [DDDD:]BB:DD.F")),
        };
        let bus = hex(bus, 2).ok_or_else(|| bad("the bus is not 2 hex digits"))?;
        let (dev, func) = devfn
            .split_once('.')
            .ok_or_else(|| bad("expected DD.F after the bus"))?;
        let device = hex(dev, 2)
            .filter(|&d| d < 0x20)
            .ok_or_else(|| bad("the device is not 00 to 1f"))?;
        let function = hex(func, 1)
            .filter(|&f| f < 8)
            .ok_or_else(|| bad("the function is not 0 to 7"))?;
        Ok(PciAddress {
            // The widths were checked above, so these cannot truncate.
            domain: domain as u16,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_dpdk_and_sysfs_write() {
        for (s, canon) in [
            ("0000:03:00.0", "0000:03:00.0"),
            ("03:00.0", "0000:03:00.0"),
            ("ffff:ff:1f.7", "ffff:ff:1f.7"),
            ("0001:AF:00.1", "0001:af:00.1"),
        ] {
            let a: PciAddress = s.parse().expect(s);
            assert_eq!(a.to_string(), canon);
            assert_eq!(canon.parse::<PciAddress>().ok(), Some(a));
        }
    }

    #[test]
    fn refusals() {
        for s in [
            "",
            "0000:03:00",
            "zz:00.0",
            "0:03:00.0",
            "0000:03:00.8",
            "0000:03:20.0",
            "0000:003:00.0",
            "a:b:c:d.e",
            "veth0",
            "memory:a",
            "net_ring0",
        ] {
            assert!(s.parse::<PciAddress>().is_err(), "{s}");
        }
    }
}
