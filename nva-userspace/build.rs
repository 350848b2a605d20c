//! Builds the XDP program (crate `nva-ebpf`) for the BPF target with the nightly
//! toolchain and bpf-linker, so a plain `cargo build` produces a complete `nva`.
//! `cargo xtask setup` installs what this needs.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../nva-common/src");
    let package = aya_build::Package {
        name: "nva-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../nva-ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default())
}
