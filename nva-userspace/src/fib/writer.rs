//! Where the FIB's decisions go. The FIB decides, in make-before-break order, what the
//! data plane's maps must become; a writer carries it out. The real writer is the
//! `Dataplane`; the unit tests record the writes and check the order.
use anyhow::Result;
use ipnet::IpNet;
use nva_common::{EcmpGroup, NextHop, Route};

use super::buckets::NhId;
use crate::dataplane::Dataplane;

pub trait FibWriter {
    /// Writes next hop `id` (all zero: released).
    fn write_nexthop(&mut self, id: NhId, nh: &NextHop) -> Result<()>;
    /// Writes ECMP group `id` (all buckets 0: released).
    fn write_group(&mut self, id: u32, group: &EcmpGroup) -> Result<()>;
    /// Installs or replaces the route of `prefix` in the table of `class`.
    fn insert_route(&mut self, class: u32, prefix: &IpNet, route: Route) -> Result<()>;
    fn remove_route(&mut self, class: u32, prefix: &IpNet) -> Result<()>;
    /// Sets the class of destinations in `prefix` (None: back to the default).
    fn set_class_prefix(&mut self, prefix: &IpNet, class: Option<u32>) -> Result<()>;
}

impl FibWriter for Dataplane {
    fn write_nexthop(&mut self, id: NhId, nh: &NextHop) -> Result<()> {
        Dataplane::write_nexthop(self, id, nh)
    }

    fn write_group(&mut self, id: u32, group: &EcmpGroup) -> Result<()> {
        Dataplane::write_group(self, id, group)
    }

    fn insert_route(&mut self, class: u32, prefix: &IpNet, route: Route) -> Result<()> {
        Dataplane::insert_route(self, class, prefix, route)
    }

    fn remove_route(&mut self, class: u32, prefix: &IpNet) -> Result<()> {
        Dataplane::remove_route(self, class, prefix)
    }

    fn set_class_prefix(&mut self, prefix: &IpNet, class: Option<u32>) -> Result<()> {
        Dataplane::set_class_prefix(self, prefix, class)
    }
}
