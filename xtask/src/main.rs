//! Project tasks: `cargo xtask setup | build | test | demo | dist`.
//!
//! xtask depends on nothing that needs the BPF toolchain, so it runs on a fresh
//! machine and installs that toolchain first. Every step is idempotent.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod systemd_vm;
mod vm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building, testing and packaging need (rust-src, bpf-linker,
    /// cargo-deb, Debian packages).
    Setup,
    /// Set up, then build the nva binary (with its embedded XDP program).
    Build,
    /// Set up, build, package (`dist`), then run every test (unit, veth/netns
    /// integration, the package installed and purged; needs root).
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        args: Vec<String>,
    },
    /// Set up, build, then run the demo: a hub topology in network namespaces with nva
    /// forwarding real traffic over ECMP next hops.
    Demo,
    /// Install the build tools and cargo-deb if missing, then build the Debian
    /// package: the release binary, the config as a conffile, the systemd unit, man
    /// pages and shell completions. Prints its path (in target/debian/).
    Dist,
    /// Set up, build, then run the throughput benchmarks (needs root; see BENCHMARKS.md).
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments for the bench binary (`--quick`; `--help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, then run the control-plane benchmarks: the full-table BGP feed
    /// and next-hop failover (needs root; see BENCHMARKS.md).
    BenchControl {
        /// Smaller table for a smoke run.
        #[arg(long)]
        quick: bool,
    },
}

/// Debian packages the tests and the demo use (dpkg-dev: cargo-deb's dependency
/// detection, dpkg-shlibdeps; man-db, systemd and lintian: the package test's `man -w`,
/// `systemd-analyze verify` and Debian's package checks).
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "ethtool",
    "bird2",
    "gobgpd",
    "dpkg-dev",
    "man-db",
    "systemd",
    "lintian",
];

/// The cargo-deb release `cargo xtask dist` uses (installed by `setup` when missing).
const CARGO_DEB_VERSION: &str = "3.8.0";

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Build => {
            setup()?;
            build()
        }
        Task::Test { args } => {
            setup()?;
            build()?;
            let deb = dist()?;
            test(&args, &deb)
        }
        Task::Demo => {
            setup()?;
            build()?;
            let debug = target_dir().join("debug");
            run(Command::new(debug.join("nva-demo")).env("NVA_BIN", debug.join("nva")))
        }
        Task::Dist => {
            // Only what building and packaging need (not the test and VM tools).
            setup_rust_src()?;
            setup_bpf_linker()?;
            setup_cargo_deb()?;
            install_missing_debian_packages(&["dpkg-dev"])?;
            let deb = dist()?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::Bench { args } => {
            setup()?;
            bench(&args)
        }
        Task::BenchControl { quick } => {
            setup()?;
            run(Command::new("cargo").current_dir(root()).args([
                "build",
                "--release",
                "--package",
                "nva-userspace",
                "--package",
                "nva-tests",
                "--bins",
            ]))?;
            let release = root().join("target/release");
            let nva = release.join("nva");
            let mut feed = Command::new(release.join("nva-bench-bgp"));
            if quick {
                feed.arg("--quick");
            }
            run(feed.env("NVA_BIN", &nva))?;
            // The same table from a real BIRD 2 peer, with BIRD's memory beside nva's.
            let mut bird = Command::new(release.join("nva-bench-bgp"));
            bird.arg("--bird");
            if quick {
                bird.arg("--quick");
            }
            run(bird.env("NVA_BIN", &nva))?;
            let runs = if quick { "1" } else { "5" };
            run(Command::new(release.join("nva-bench-failover"))
                .args(["--runs", runs])
                .env("NVA_BIN", &nva))
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace) or `target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> Result<()> {
    setup_rust_src()?;
    setup_bpf_linker()?;
    setup_cargo_deb()?;
    setup_debian_packages()?;
    vm::setup()?;
    systemd_vm::setup(&vm::cache_dir(), &vm::debian_mirror())?;
    Ok(())
}

fn setup_cargo_deb() -> Result<()> {
    if output(Command::new("cargo").args(["deb", "--version"])).is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION}");
    run(Command::new("cargo").args([
        "+stable",
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
    ]))
}

fn setup_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    eprintln!("xtask: installing the nightly rust-src component");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker must use the same LLVM as the nightly rustc that emits the bitcode. Debian
/// has no matching system LLVM, so link bpf-linker against the toolchain's own libLLVM.
fn setup_bpf_linker() -> Result<()> {
    // bpf-linker loads the toolchain's libLLVM, which rustup puts on the library path:
    // ask through rustup, as rustc will run it.
    if output(Command::new("rustup").args(["run", "nightly", "bpf-linker", "--version"])).is_some()
    {
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed (rustup toolchain install nightly)")?;
    let lib = Path::new(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let major = libllvm
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libLLVM.so."))
        .and_then(|v| v.split('.').next())
        .context("cannot read the LLVM version")?
        .to_string();
    let prefix = Path::new("/opt/rustllvm");
    std::fs::create_dir_all(prefix.join("lib64"))?;
    let link = prefix.join("lib64/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    eprintln!("xtask: installing bpf-linker against {}", libllvm.display());
    run(Command::new("cargo")
        .args([
            "+stable",
            "install",
            "bpf-linker",
            "--version",
            "0.13.0",
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .env("LLVM_PREFIX", prefix))
}

fn setup_debian_packages() -> Result<()> {
    let wanted: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .chain(vm::DEBIAN_PACKAGES)
        .chain(systemd_vm::DEBIAN_PACKAGES)
        .copied()
        .collect();
    install_missing_debian_packages(&wanted)
}

/// apt-get installs those of `packages` that are not installed yet.
fn install_missing_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages {missing:?}");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn build() -> Result<()> {
    // The VM tests run nva-bench's pktgen generator in a guest.
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--package",
        "nva-userspace",
        "--package",
        "nva-tests",
        "--package",
        "nva-bench",
        "--bins",
    ]))
}

/// Builds the release binary, generates its man pages and completions from the CLI
/// definition, and packages everything with cargo-deb (metadata: nva-userspace's
/// `[package.metadata.deb]`). Returns the path of the `.deb`.
fn dist() -> Result<PathBuf> {
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "nva-userspace",
        "--bin",
        "nva",
    ]))?;
    let release = target_dir().join("release");
    let generated = release.join("nva-dist");
    if generated.exists() {
        std::fs::remove_dir_all(&generated)
            .with_context(|| format!("cannot remove {}", generated.display()))?;
    }
    let nva = release.join("nva");
    run(Command::new(&nva)
        .args(["generate", "man"])
        .arg(generated.join("man")))?;
    // Compressed as Debian policy asks (cargo-deb compresses only files it did not build).
    let mut gzip = Command::new("gzip");
    gzip.arg("-9n");
    for page in std::fs::read_dir(generated.join("man"))? {
        gzip.arg(page?.path());
    }
    run(&mut gzip)?;
    run(Command::new(&nva)
        .args(["generate", "completions"])
        .arg(generated.join("completions")))?;
    let out_dir = target_dir().join("debian");
    let printed = Command::new("cargo")
        .current_dir(root())
        .args([
            "deb",
            "--package",
            "nva-userspace",
            "--no-build",
            "--output",
        ])
        .arg(&out_dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start cargo deb (cargo xtask setup installs it)")?;
    if !printed.status.success() {
        bail!("cargo deb failed: {}", printed.status);
    }
    // cargo-deb prints the path of the package it wrote.
    let deb = String::from_utf8_lossy(&printed.stdout)
        .lines()
        .map(str::trim)
        .rfind(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb printed no package path")?;
    if !deb.is_file() {
        bail!("cargo deb named {}, which does not exist", deb.display());
    }
    eprintln!(
        "xtask: {} ({} KiB)",
        deb.display(),
        std::fs::metadata(&deb)?.len() / 1024
    );
    Ok(deb)
}

fn test(args: &[String], deb: &Path) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the integration tests create network namespaces and attach XDP: run as root");
    }
    // Namespaces, XDP attachments and traffic counters are global state: one test at a time.
    run(Command::new("cargo")
        .current_dir(root())
        .args([
            "test",
            "--workspace",
            "--exclude",
            "nva-ebpf",
            "--exclude",
            "nva-bench-ebpf",
            "--",
            "--test-threads=1",
        ])
        .args(args)
        .env("NVA_BIN", target_dir().join("debug/nva"))
        .env("NVA_BENCH_BIN", target_dir().join("debug/nva-bench"))
        .env("NVA_DEB", deb)
        .env("NVA_VM_DIR", vm::cache_dir()))
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Builds the benchmarks in release mode and runs them.
fn bench(args: &[String]) -> Result<()> {
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "nva-bench",
    ]))?;
    run(Command::new(target_dir().join("release/nva-bench")).args(args))
}
