//! The data plane's settings and load options, from the config.
use std::path::PathBuf;

use nva_common::{
    SET_DROP_NO_ROUTE_EW, SET_DROP_NO_ROUTE_NS, SET_SEGMENTS, SET_SYMMETRIC_HASH, Settings,
};

use crate::{
    config::{Config, FibKind, Ipv6FibKind, NoRoute, SegmentAction, TrafficClass},
    dataplane::LoadOptions,
    fib::Table,
};

pub(super) fn settings_of(config: &Config) -> Settings {
    let mut flags = 0;
    if config.dataplane.symmetric_hash {
        flags |= SET_SYMMETRIC_HASH;
    }
    let sep = &config.separation;
    if sep.no_route_east_west.unwrap_or(config.dataplane.no_route) == NoRoute::Drop {
        flags |= SET_DROP_NO_ROUTE_EW;
    }
    if sep
        .no_route_north_south
        .unwrap_or(config.dataplane.no_route)
        == NoRoute::Drop
    {
        flags |= SET_DROP_NO_ROUTE_NS;
    }
    if config
        .segment_rules
        .iter()
        .any(|r| r.action == SegmentAction::Deny)
    {
        flags |= SET_SEGMENTS;
    }
    let hash_seed = config.dataplane.hash_seed.unwrap_or_else(random_seed);
    Settings { hash_seed, flags }
}

fn random_seed() -> u32 {
    let mut seed = [0u8; 4];
    // SAFETY: valid buffer of the given length.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != 4 {
        // Not security relevant: fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ t.as_secs() as u32;
    }
    u32::from_ne_bytes(seed)
}

pub(super) fn table_of(class: TrafficClass) -> Table {
    match class {
        TrafficClass::EastWest => Table::EastWest,
        TrafficClass::NorthSouth => Table::NorthSouth,
    }
}

pub fn load_options(config: &Config) -> LoadOptions {
    LoadOptions {
        dir24_ipv4: [
            config.dataplane.ipv4_fib_east_west == FibKind::Dir24_8,
            config.dataplane.ipv4_fib_north_south == FibKind::Dir24_8,
        ],
        multibit_ipv6: [
            config.dataplane.ipv6_fib_east_west == Ipv6FibKind::Multibit,
            config.dataplane.ipv6_fib_north_south == Ipv6FibKind::Multibit,
        ],
        multibit_blocks: config.dataplane.ipv6_fib_blocks.unwrap_or(0),
        dir24_blocks: config.dataplane.ipv4_fib_blocks.unwrap_or(0),
        dxr_ipv4: [
            config.dataplane.ipv4_fib_east_west == FibKind::Dxr,
            config.dataplane.ipv4_fib_north_south == FibKind::Dxr,
        ],
        dxr_cells: config.dataplane.ipv4_fib_ranges.unwrap_or(0),
        pin_dir: config.dataplane.pin_path.as_ref().map(PathBuf::from),
    }
}
