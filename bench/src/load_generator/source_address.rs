//! Source addresses for many loopback connections. Every address of
//! 127.0.0.0/8 is the loopback interface on Linux, so connections can be
//! spread over 127.0.0.2, 127.0.0.3, … without configuration: each address
//! has its own ephemeral ports, and a server's per-IP limits see several
//! clients instead of one.

use std::net::{IpAddr, Ipv4Addr};

/// Connections given the same source address before the next is used;
/// far below the ~28,000 ephemeral ports of one address.
pub const CONNECTIONS_PER_SOURCE_ADDRESS: usize = 4000;

/// The first source address used (127.0.0.1 is left to everything else).
const FIRST_HOST: usize = 2;

/// The last usable host number of 127.0.0.0/24 spread this way.
const LAST_HOST: usize = 254;

/// The source address of connection `connection_idx`: blocks of
/// [`CONNECTIONS_PER_SOURCE_ADDRESS`] connections per address from
/// 127.0.0.2 on (wrapping after 127.0.0.254, a million connections on).
pub fn source_address(connection_idx: usize) -> IpAddr {
    source_address_from(FIRST_HOST, connection_idx)
}

/// As [`source_address`], starting at host `127.0.0.<first_host>`: client
/// processes use disjoint ranges.
pub fn source_address_from(first_host: usize, connection_idx: usize) -> IpAddr {
    let n_hosts = LAST_HOST - FIRST_HOST + 1;
    let offset =
        first_host.saturating_sub(FIRST_HOST) + connection_idx / CONNECTIONS_PER_SOURCE_ADDRESS;
    let host = FIRST_HOST + offset % n_hosts;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, host as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fill_one_address_before_the_next() {
        assert_eq!(source_address(0), IpAddr::from([127, 0, 0, 2]));
        assert_eq!(
            source_address(CONNECTIONS_PER_SOURCE_ADDRESS - 1),
            IpAddr::from([127, 0, 0, 2])
        );
        assert_eq!(
            source_address(CONNECTIONS_PER_SOURCE_ADDRESS),
            IpAddr::from([127, 0, 0, 3])
        );
        assert_eq!(source_address_from(10, 0), IpAddr::from([127, 0, 0, 10]));
        assert_eq!(
            source_address_from(254, CONNECTIONS_PER_SOURCE_ADDRESS),
            IpAddr::from([127, 0, 0, 2])
        );
    }
}
