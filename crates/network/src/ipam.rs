//! Address allocation in the bridge's subnet. Allocation goes round the subnet (the next free
//! address after the last one given), so an address released by an exec whose namespace the
//! kernel is still tearing down is not handed out again soon.
//!
//! Nothing is persisted: every exec dies with the engine (see the engine's watchdog), so a
//! starting engine has no address holders and begins with an empty allocator.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::cidr::Ipv4Cidr;

/// Errors of address allocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every exec address of the subnet is in use.
    #[error("no free address left in {0} ({1} execs hold one); choose a larger --network-cidr")]
    Exhausted(Ipv4Cidr, usize),
}

/// The exec addresses of a subnet.
#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Cidr,
    in_use: HashSet<u32>,
    /// Index (offset from the network address, minus 2) of the last address given.
    last: u32,
}

impl Ipam {
    pub fn new(cidr: Ipv4Cidr) -> Ipam {
        Ipam {
            cidr,
            in_use: HashSet::new(),
            // So that the first exec gets index 0 (offset 2: after the gateway).
            last: cidr.exec_addresses() - 1,
        }
    }

    /// A free address: network + 2 up to broadcast - 1.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let count = self.cidr.exec_addresses();
        let base = u32::from(self.cidr.network());
        for step in 1..=count {
            let index = (self.last + step) % count;
            let offset = index + 2;
            if self.in_use.insert(offset) {
                self.last = index;
                return Ok(Ipv4Addr::from(base + offset));
            }
        }
        Err(IpamError::Exhausted(self.cidr, self.in_use.len()))
    }

    /// Returns `address`; an address not given out is ignored.
    pub fn release(&mut self, address: Ipv4Addr) {
        if self.cidr.contains(address) {
            self.in_use
                .remove(&(u32::from(address) - u32::from(self.cidr.network())));
        }
    }

    /// Addresses given out and not returned.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_round_the_subnet_and_never_twice() {
        let mut ipam = Ipam::new("10.9.0.0/29".parse().unwrap());
        let got: Vec<Ipv4Addr> = (0..5).map(|_| ipam.allocate().unwrap()).collect();
        assert_eq!(
            got,
            (2..=6)
                .map(|i| Ipv4Addr::new(10, 9, 0, i))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            ipam.allocate(),
            Err(IpamError::Exhausted("10.9.0.0/29".parse().unwrap(), 5))
        );
        ipam.release(Ipv4Addr::new(10, 9, 0, 4));
        ipam.release(Ipv4Addr::new(10, 9, 0, 3));
        // The next free after the last one given, wrapping round.
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 9, 0, 3)));
        assert_eq!(ipam.allocate(), Ok(Ipv4Addr::new(10, 9, 0, 4)));
        assert_eq!(ipam.in_use(), 5);
        // Foreign addresses are ignored.
        ipam.release(Ipv4Addr::new(10, 10, 0, 4));
        assert_eq!(ipam.in_use(), 5);
    }

    #[test]
    fn released_addresses_come_back_last() {
        let mut ipam = Ipam::new("10.9.0.0/24".parse().unwrap());
        let first = ipam.allocate().unwrap();
        ipam.release(first);
        assert_ne!(ipam.allocate().unwrap(), first);
    }
}
