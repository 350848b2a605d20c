//! The kernel mirror's writer: applies the FIB's `KernelOp`s to the kernel's routing
//! table on its own task, so the controller does not wait for them.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use anyhow::Result;
use ipnet::IpNet;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    fib::KernelOp,
    netlink::{self, Netlink, routes::KernelRoute},
};

/// The kernel mirror's writer task and what it found at start.
pub struct KernelSync {
    /// Where the changes go, in the order the FIB emitted them.
    pub tx: mpsc::UnboundedSender<KernelOp>,
    pub task: tokio::task::JoinHandle<()>,
    /// Nexthop objects an earlier run left (nva's protocol): this run's ids start
    /// above them, and they are deleted once this run's routes have replaced theirs.
    pub stale: Vec<u32>,
}

/// Applies kernel route changes on their own task.
///
/// Only each prefix's final state matters, so what is queued is coalesced per prefix and
/// up to 64 route requests are in flight at once: a full table reaches the kernel in
/// seconds instead of one netlink round trip per route. Per batch, the nexthop objects
/// are created first and deleted last, so no route ever names a missing object (the
/// kernel would drop it).
pub fn spawn(nl: Netlink) -> Result<KernelSync> {
    use futures::StreamExt;
    // Opened here, in the daemon's network namespace.
    let mut nexthops = netlink::nexthops::Nexthops::open()?;
    let stale = nexthops.own().unwrap_or_else(|e| {
        warn!("listing the kernel's nexthop objects: {e:#}");
        Vec::new()
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<KernelOp>();
    let task = tokio::spawn(async move {
        // The objects made, with their hops (to make one again the kernel dropped).
        let mut objects: HashMap<u32, std::sync::Arc<[(IpAddr, u32)]>> = HashMap::new();
        while let Some(first) = rx.recv().await {
            let mut adds = Vec::new();
            let mut routes: HashMap<IpNet, Option<KernelRoute>> = HashMap::new();
            let mut dels = Vec::new();
            let mut next = Some(first);
            while let Some(op) = next.take() {
                match op {
                    KernelOp::AddNexthop { id, hops } => adds.push((id, hops)),
                    KernelOp::Route(prefix, route) => {
                        routes.insert(prefix, route);
                    }
                    KernelOp::DelNexthop { id, ids } => dels.push((id, ids)),
                }
                if routes.len() < 8192 {
                    next = rx.try_recv().ok();
                }
            }
            // Objects are few and each request is answered at once: no need to leave
            // the task for them.
            for (id, hops) in adds {
                if let Err(e) = nexthops.add(id, &hops) {
                    warn!("kernel route sync: {e:#}");
                }
                objects.insert(id, hops);
            }
            let total = routes.len();
            let failed: Vec<(IpNet, Option<KernelRoute>)> = futures::stream::iter(routes)
                .map(|(prefix, route)| {
                    let nl = nl.clone();
                    async move {
                        let failed = apply_kernel_route(&nl, prefix, route.as_ref()).await;
                        failed.err().map(|_| (prefix, route))
                    }
                })
                .buffer_unordered(64)
                .filter_map(|r| async move { r })
                .collect()
                .await;
            // A failed change is retried once; one naming an object the kernel no
            // longer has (deleted behind nva's back, or with its device) after the
            // object is made again. What still fails is reported once per batch, not
            // once per route.
            let mut remade = HashSet::new();
            let mut still = Vec::new();
            for (prefix, route) in failed {
                if let Some(KernelRoute::Nexthop(id)) = &route
                    && let Some(hops) = objects.get(id)
                    && !remade.contains(id)
                    && nexthops.add(*id, hops).is_ok()
                {
                    remade.insert(*id);
                }
                if let Err(e) = apply_kernel_route(&nl, prefix, route.as_ref()).await {
                    still.push(e);
                }
            }
            if !remade.is_empty() {
                info!(
                    objects = remade.len(),
                    "kernel route sync: nexthop objects made again"
                );
            }
            if let Some(first) = still.first() {
                warn!(
                    failed = still.len(),
                    of = total,
                    "kernel route sync: route changes failed, the first: {first:#}"
                );
            }
            for (id, ids) in dels {
                if let Err(e) = nexthops.delete(id, ids) {
                    warn!("kernel route sync: {e:#}");
                }
                objects.remove(&id);
            }
        }
    });
    Ok(KernelSync { tx, task, stale })
}

/// Sets (or, with None, removes) nva's kernel route for `prefix`.
async fn apply_kernel_route(
    nl: &Netlink,
    prefix: IpNet,
    route: Option<&KernelRoute>,
) -> Result<()> {
    match route {
        Some(route) => nl.replace_route(prefix, route).await,
        None => nl.delete_route(prefix).await,
    }
}
