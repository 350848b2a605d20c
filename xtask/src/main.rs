//! Project tasks: `cargo xtask setup | build | test | demo`.
//!
//! xtask depends on nothing that needs the BPF toolchain, so it runs on a fresh
//! machine and installs that toolchain first. Every step is idempotent.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod vm;

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (rust-src, bpf-linker, Debian packages).
    Setup,
    /// Set up, then build the nva binary (with its embedded XDP program).
    Build,
    /// Set up, build, then run every test (unit and veth/netns integration; needs root).
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        args: Vec<String>,
    },
    /// Set up, build, then run the demo: a hub topology in network namespaces with nva
    /// forwarding real traffic over ECMP next hops.
    Demo,
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

/// Debian packages the tests and the demo use.
const DEBIAN_PACKAGES: &[&str] = &["iproute2", "iputils-ping", "ethtool", "bird2", "gobgpd"];

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
            test(&args)
        }
        Task::Demo => {
            setup()?;
            build()?;
            run(Command::new(root().join("target/debug/nva-demo"))
                .env("NVA_BIN", root().join("target/debug/nva")))
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
    setup_debian_packages()?;
    vm::setup()?;
    Ok(())
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
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .chain(vm::DEBIAN_PACKAGES)
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
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--package",
        "nva-userspace",
        "--package",
        "nva-tests",
        "--bins",
    ]))
}

fn test(args: &[String]) -> Result<()> {
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
            "--",
            "--test-threads=1",
        ])
        .args(args)
        .env("NVA_BIN", root().join("target/debug/nva"))
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
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => root().join(dir),
        None => root().join("target"),
    };
    run(Command::new(target.join("release/nva-bench")).args(args))
}
