//! What the controller asks of the data plane besides the FIB's writes: ports,
//! settings, segments, attachment, counters. The real device is the `Dataplane`; the
//! unit tests use [`TestDevice`], the FIB's recording writer with the rest kept as
//! plain state, so the controller runs without a kernel.
use anyhow::Result;
use ipnet::IpNet;
use nva_common::{Counter, NUM_REASONS, Settings};

use crate::{
    dataplane::{Dataplane, LoadOptions},
    fib::FibWriter,
};

pub trait Device: FibWriter {
    /// How the program was loaded (fixed for its life).
    fn options(&self) -> &LoadOptions;
    /// The ECMP hash seed of the program this one replaced, if any.
    fn previous_hash_seed(&self) -> Option<u32>;
    fn set_settings(&mut self, settings: Settings) -> Result<()>;
    fn add_port(&mut self, ifindex: u32, slot: u32, flags: u32, mac: [u8; 6]) -> Result<()>;
    fn remove_port(&mut self, ifindex: u32) -> Result<()>;
    fn attach(&mut self, ifindex: u32, name: &str, generic: bool) -> Result<()>;
    fn detach(&mut self, ifindex: u32, name: &str) -> Result<()>;
    /// A stop without a successor: pins removed, every interface detached.
    fn unpin_and_detach(&mut self);
    fn set_segment_prefix(&mut self, prefix: &IpNet, id: Option<u32>) -> Result<()>;
    fn set_segment_policy(&mut self, from: u32, to: u32, deny: bool) -> Result<()>;
    fn is_attached(&self, ifindex: u32) -> bool;
    /// Packets and bytes per reason of a counter slot.
    fn counters(&self, slot: u32) -> Result<[Counter; NUM_REASONS as usize]>;
    /// How many interfaces really run the program (None: cannot tell).
    fn kernel_links(&self) -> Option<usize>;
}

impl Device for Dataplane {
    fn options(&self) -> &LoadOptions {
        Dataplane::options(self)
    }
    fn previous_hash_seed(&self) -> Option<u32> {
        Dataplane::previous_hash_seed(self)
    }
    fn set_settings(&mut self, settings: Settings) -> Result<()> {
        Dataplane::set_settings(self, settings)
    }
    fn add_port(&mut self, ifindex: u32, slot: u32, flags: u32, mac: [u8; 6]) -> Result<()> {
        Dataplane::add_port(self, ifindex, slot, flags, mac)
    }
    fn remove_port(&mut self, ifindex: u32) -> Result<()> {
        Dataplane::remove_port(self, ifindex)
    }
    fn attach(&mut self, ifindex: u32, name: &str, generic: bool) -> Result<()> {
        Dataplane::attach(self, ifindex, name, generic)
    }
    fn detach(&mut self, ifindex: u32, name: &str) -> Result<()> {
        Dataplane::detach(self, ifindex, name)
    }
    fn unpin_and_detach(&mut self) {
        Dataplane::unpin_and_detach(self)
    }
    fn set_segment_prefix(&mut self, prefix: &IpNet, id: Option<u32>) -> Result<()> {
        Dataplane::set_segment_prefix(self, prefix, id)
    }
    fn set_segment_policy(&mut self, from: u32, to: u32, deny: bool) -> Result<()> {
        Dataplane::set_segment_policy(self, from, to, deny)
    }
    fn is_attached(&self, ifindex: u32) -> bool {
        self.attached().any(|i| i == ifindex)
    }
    fn counters(&self, slot: u32) -> Result<[Counter; NUM_REASONS as usize]> {
        Dataplane::counters(self, slot)
    }
    fn kernel_links(&self) -> Option<usize> {
        Dataplane::kernel_links(self)
    }
}

#[cfg(test)]
pub use test_device::TestDevice;

#[cfg(test)]
mod test_device {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::fib::recorder::Recorder;

    /// The FIB's maps as the recorder keeps them (checking make-before-break), and the
    /// rest of the data plane as plain state.
    #[derive(Default)]
    pub struct TestDevice {
        pub fib: Recorder,
        pub options: LoadOptions,
        pub settings: Settings,
        /// ifindex -> (slot, flags, MAC).
        pub ports: BTreeMap<u32, (u32, u32, [u8; 6])>,
        pub attached: BTreeSet<u32>,
        pub segment_prefixes: BTreeMap<IpNet, u32>,
        pub denied: BTreeSet<(u32, u32)>,
        /// `check_segments` runs after every segment write (to catch a moment the
        /// policy is wrong, not only its end).
        pub check_segments: Option<fn(&TestDevice)>,
        /// How often the kernel was asked which interfaces run the program.
        pub link_dumps: std::cell::Cell<usize>,
    }

    impl FibWriter for TestDevice {
        fn write_nexthop(&mut self, id: u16, nh: &nva_common::NextHop) -> Result<()> {
            self.fib.write_nexthop(id, nh)
        }
        fn write_group(&mut self, id: u32, group: &nva_common::EcmpGroup) -> Result<()> {
            self.fib.write_group(id, group)
        }
        fn insert_route(
            &mut self,
            class: u32,
            prefix: &IpNet,
            route: nva_common::Route,
        ) -> Result<()> {
            self.fib.insert_route(class, prefix, route)
        }
        fn remove_route(&mut self, class: u32, prefix: &IpNet) -> Result<()> {
            self.fib.remove_route(class, prefix)
        }
        fn set_class_prefix(&mut self, prefix: &IpNet, class: Option<u32>) -> Result<()> {
            self.fib.set_class_prefix(prefix, class)
        }
    }

    impl Device for TestDevice {
        fn options(&self) -> &LoadOptions {
            &self.options
        }
        fn previous_hash_seed(&self) -> Option<u32> {
            None
        }
        fn set_settings(&mut self, settings: Settings) -> Result<()> {
            self.settings = settings;
            Ok(())
        }
        fn add_port(&mut self, ifindex: u32, slot: u32, flags: u32, mac: [u8; 6]) -> Result<()> {
            self.ports.insert(ifindex, (slot, flags, mac));
            Ok(())
        }
        fn remove_port(&mut self, ifindex: u32) -> Result<()> {
            let user = self
                .fib
                .nexthops
                .iter()
                .find(|(_, nh)| nh.ifindex == ifindex);
            assert!(
                user.is_none(),
                "port {ifindex} removed while next hop {user:?} uses it"
            );
            self.ports.remove(&ifindex);
            Ok(())
        }
        fn attach(&mut self, ifindex: u32, _: &str, _: bool) -> Result<()> {
            assert!(
                self.ports.contains_key(&ifindex),
                "attached before its port"
            );
            self.attached.insert(ifindex);
            Ok(())
        }
        fn detach(&mut self, ifindex: u32, _: &str) -> Result<()> {
            self.attached.remove(&ifindex);
            Ok(())
        }
        fn unpin_and_detach(&mut self) {
            self.attached.clear();
        }
        fn set_segment_prefix(&mut self, prefix: &IpNet, id: Option<u32>) -> Result<()> {
            match id {
                Some(id) => self.segment_prefixes.insert(*prefix, id),
                None => self.segment_prefixes.remove(prefix),
            };
            if let Some(check) = self.check_segments {
                check(self);
            }
            Ok(())
        }
        fn set_segment_policy(&mut self, from: u32, to: u32, deny: bool) -> Result<()> {
            if deny {
                self.denied.insert((from, to));
            } else {
                self.denied.remove(&(from, to));
            }
            if let Some(check) = self.check_segments {
                check(self);
            }
            Ok(())
        }
        fn is_attached(&self, ifindex: u32) -> bool {
            self.attached.contains(&ifindex)
        }
        fn counters(&self, _: u32) -> Result<[Counter; NUM_REASONS as usize]> {
            Ok([Counter::default(); NUM_REASONS as usize])
        }
        fn kernel_links(&self) -> Option<usize> {
            self.link_dumps.set(self.link_dumps.get() + 1);
            Some(self.attached.len())
        }
    }
}
