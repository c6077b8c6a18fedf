//! IPv4 subnets: parsing `a.b.c.d/n`, and checking one against the host's routes.

use std::net::Ipv4Addr;
use std::str::FromStr;

/// Errors of a subnet given by the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    #[error("invalid network cidr {0:?}: expected an IPv4 subnet such as 10.87.0.0/16")]
    Syntax(String),
    /// Host bits are set (`10.87.0.1/16`).
    #[error("invalid network cidr {0}: host bits are set (did you mean {1}?)")]
    HostBits(String, Ipv4Cidr),
    /// Too small to hold a gateway and an exec, or larger than a /8.
    #[error("invalid network cidr {0}: the prefix length must be between 8 and 29")]
    Size(String),
}

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The subnet's first address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    fn mask(prefix_len: u8) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0)
    }

    /// The first host address: the bridge's (the containers' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The last address (broadcast).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask(self.prefix_len))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & Self::mask(self.prefix_len) == u32::from(self.network)
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let shorter = self.prefix_len.min(other.prefix_len);
        let mask = Self::mask(shorter);
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// Addresses execs can get: all but the network, gateway and broadcast addresses.
    pub fn exec_addresses(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix_len))) - 3
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (address, prefix) = s.split_once('/').ok_or_else(syntax)?;
        let address: Ipv4Addr = address.parse().map_err(|_| syntax())?;
        let prefix_len: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix_len > 32 {
            return Err(syntax());
        }
        if !(8..=29).contains(&prefix_len) {
            return Err(CidrError::Size(s.to_owned()));
        }
        let network = Ipv4Addr::from(u32::from(address) & Self::mask(prefix_len));
        let cidr = Ipv4Cidr {
            network,
            prefix_len,
        };
        if network != address {
            return Err(CidrError::HostBits(s.to_owned(), cidr));
        }
        Ok(cidr)
    }
}

/// A route of the host's main IPv4 table, from `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub interface: String,
    pub destination: Ipv4Cidr,
}

/// Parses `/proc/net/route` (hexadecimal little-endian addresses). Default routes and lines that
/// do not parse are skipped.
pub fn parse_proc_routes(text: &str) -> Vec<HostRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let interface = (*fields.first()?).to_owned();
            let destination = u32::from_str_radix(fields.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(fields.get(7)?, 16).ok()?;
            // The kernel prints the address's bytes as a native-endian (little-endian) u32.
            let destination = Ipv4Addr::from(destination.to_le_bytes());
            let prefix_len = u8::try_from(mask.count_ones()).ok()?;
            if prefix_len == 0 {
                return None;
            }
            Some(HostRoute {
                interface,
                destination: Ipv4Cidr {
                    network: destination,
                    prefix_len,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_subnets() {
        let cidr: Ipv4Cidr = "10.87.0.0/16".parse().unwrap();
        assert_eq!(cidr.gateway(), Ipv4Addr::new(10, 87, 0, 1));
        assert_eq!(cidr.broadcast(), Ipv4Addr::new(10, 87, 255, 255));
        assert_eq!(cidr.exec_addresses(), 65533);
        assert!(cidr.contains(Ipv4Addr::new(10, 87, 3, 4)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 88, 0, 1)));
        assert!(matches!(
            "10.87.0.1/16".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits(_, c)) if c == cidr
        ));
        assert!(matches!(
            "10.87.0.0/30".parse::<Ipv4Cidr>(),
            Err(CidrError::Size(_))
        ));
        for bad in ["10.87.0.0", "10.87.0.0/33", "x/16", "10.87.0/16"] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(CidrError::Syntax(_))),
                "{bad}"
            );
        }
        let small: Ipv4Cidr = "10.87.4.0/24".parse().unwrap();
        assert!(cidr.overlaps(&small) && small.overlaps(&cidr));
        assert!(!small.overlaps(&"10.87.5.0/24".parse().unwrap()));
    }

    #[test]
    fn reads_proc_net_route() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_proc_routes(text),
            vec![HostRoute {
                interface: "eth0".into(),
                destination: "192.0.2.0/24".parse().unwrap(),
            }]
        );
    }
}
