//! Builds the bench's helper XDP programs (crate `nva-bench-ebpf`, `bench/ebpf`) for the
//! BPF target, as nva-userspace's build.rs builds nva's own program: they are the
//! bench's, not part of nva.
fn main() -> anyhow::Result<()> {
    let package = aya_build::Package {
        name: "nva-bench-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
