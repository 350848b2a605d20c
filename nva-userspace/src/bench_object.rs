//! The benchmark helper programs (`nva-ebpf/src/bench.rs`: traffic generator, sink,
//! pass-through), built by build.rs next to the data plane. Used by `nva-bench` only.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nva-bench"));
