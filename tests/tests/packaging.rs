//! The Debian package (`cargo xtask dist`): installed on this machine with apt, checked
//! as an operator would use it, purged, and nothing may be left behind.
//!
//! `cargo xtask test` builds the package first and passes its path in `NVA_DEB`. Run on
//! its own (`cargo test -p nva-tests --test packaging`), the test builds it with
//! `cargo xtask dist` ([`nva_deb`]).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use nva_tests::{nva_deb, require_root};

const PACKAGE: &str = "nva";
const UNIT: &str = "/lib/systemd/system/nva.service";
const CONFFILE: &str = "/etc/nva/nva.toml";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    // "install ok installed", or "deinstall ok config-files" after a remove without purge.
    !String::from_utf8_lossy(&sh("dpkg-query", &["-W", "-f=${Status}", PACKAGE]).stdout)
        .trim()
        .is_empty()
}

fn group_exists() -> bool {
    sh("getent", &["group", PACKAGE]).status.success()
}

fn has(program: &str) -> bool {
    sh("sh", &["-c", &format!("command -v {program}")])
        .status
        .success()
}

/// Purges the package (and removes the group if this test created it) when dropped:
/// the machine is left as it was, also when an assertion fails half-way.
struct Cleanup {
    group_existed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if installed() {
            let out = sh("apt-get", &["purge", "-y", "-q", PACKAGE]);
            if !out.status.success() {
                sh("dpkg", &["--purge", "--force-all", PACKAGE]);
            }
        }
        if !self.group_existed && group_exists() {
            sh("delgroup", &["--system", "--quiet", PACKAGE]);
        }
    }
}

#[test]
fn the_debian_package_installs_works_and_purges_cleanly() {
    if !require_root("the_debian_package_installs_works_and_purges_cleanly") {
        return;
    }
    let deb = nva_deb();
    assert!(
        !installed(),
        "the nva package is already installed on this machine; this test installs and purges \
         it: remove it first (apt-get purge nva)"
    );
    let _cleanup = Cleanup {
        group_existed: group_exists(),
    };
    eprintln!(
        "package {} ({} KiB)",
        deb.display(),
        std::fs::metadata(&deb).unwrap().len() / 1024
    );

    // What the package says about itself.
    let fields = ok(
        "dpkg-deb",
        &[
            "--show",
            "--showformat=${Package} ${Version} ${Depends}",
            deb.to_str().unwrap(),
        ],
    );
    assert!(
        fields.starts_with(&format!("nva {}-", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(fields.contains("adduser"), "Depends: {fields}");
    if has("lintian") {
        // Debian's package checker (installed by `cargo xtask setup`): no error and no
        // warning (the one override, for a package outside Debian's archive, ships in
        // the package: /usr/share/lintian/overrides/nva).
        let out = sh(
            "lintian",
            &["--fail-on", "error,warning", deb.to_str().unwrap()],
        );
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "lintian:\n{report}");
        assert!(
            !report
                .lines()
                .any(|l| l.starts_with("E: ") || l.starts_with("W: ")),
            "lintian:\n{report}"
        );
    }

    let deb_arg = deb.canonicalize().unwrap();
    ok(
        "apt-get",
        &["install", "-y", "-q", deb_arg.to_str().unwrap()],
    );
    assert!(installed());

    // The binary, from the PATH an operator has.
    let version = ok("nva", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("nva {}", env!("CARGO_PKG_VERSION")),
        "nva --version"
    );
    assert_eq!(ok("sh", &["-c", "command -v nva"]).trim(), "/usr/bin/nva");

    // The shipped config is a conffile, and the packaged binary accepts it.
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    assert!(
        conffiles.lines().any(|l| l.trim().starts_with(CONFFILE)),
        "conffiles: {conffiles}"
    );
    assert_eq!(
        std::fs::read_to_string(CONFFILE).unwrap(),
        std::fs::read_to_string(workspace().join("dist/nva.toml")).unwrap(),
        "{CONFFILE} is dist/nva.toml"
    );
    ok("nva", &["config", "check", "--offline", CONFFILE]);

    // The control socket's group.
    assert!(group_exists(), "postinst creates the nva group");

    // Documentation: README, man pages (one per subcommand), completions.
    assert!(Path::new("/usr/share/doc/nva/README.md").is_file());
    assert!(Path::new("/usr/share/doc/nva/copyright").is_file());
    assert!(Path::new("/usr/share/doc/nva/changelog.Debian.gz").is_file());
    for page in ["nva", "nva-run", "nva-routes", "nva-config-check"] {
        let file = format!("/usr/share/man/man1/{page}.1.gz");
        assert!(Path::new(&file).is_file(), "{file} missing");
    }
    assert!(
        !Path::new("/usr/share/man/man1/nva-generate.1.gz").exists(),
        "the hidden generate subcommand has no man page"
    );
    if has("man") {
        assert_eq!(
            ok("man", &["-w", "nva"]).trim(),
            "/usr/share/man/man1/nva.1.gz"
        );
        // The page renders and documents the subcommands.
        let text = ok("sh", &["-c", "MANWIDTH=100 man nva 2>&1 | col -b"]);
        assert!(text.contains("nva-routes(1)"), "man nva:\n{text}");
    }
    for (file, mark) in [
        ("/usr/share/bash-completion/completions/nva", "complete -F"),
        ("/usr/share/zsh/vendor-completions/_nva", "#compdef nva"),
        (
            "/usr/share/fish/vendor_completions.d/nva.fish",
            "complete -c nva",
        ),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(mark), "{file} lacks {mark:?}");
        assert!(text.contains("nexthops"), "{file} lacks the subcommands");
    }
    if has("bash") {
        // bash can load the completion and completes a subcommand.
        let script = "source /usr/share/bash-completion/completions/nva; \
                      COMP_WORDS=(nva nexth); COMP_CWORD=1; COMP_LINE='nva nexth'; \
                      COMP_POINT=${#COMP_LINE}; _nva nva nexth nva; echo \"${COMPREPLY[@]}\"";
        assert_eq!(ok("bash", &["-c", script]).trim(), "nexthops");
    }

    // The unit: installed, valid, neither enabled nor started (the config names this
    // machine's interfaces first).
    assert!(Path::new(UNIT).is_file(), "{UNIT} missing");
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/nva run --config /etc/nva/nva.toml"));
    if has("systemd-analyze") {
        // Works without systemd as PID 1 too: it loads the unit in a test manager and
        // checks its syntax, that the Exec binaries exist and the dependencies load.
        let out = sh("systemd-analyze", &["verify", UNIT]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "systemd-analyze verify:\n{stderr}");
        let about_nva: Vec<&str> = stderr.lines().filter(|l| l.contains("nva")).collect();
        assert!(
            about_nva.is_empty(),
            "systemd-analyze verify warns about nva:\n{stderr}"
        );
    }
    if has("systemctl") {
        let state = sh("systemctl", &["is-enabled", "nva.service"]);
        assert_eq!(
            String::from_utf8_lossy(&state.stdout).trim(),
            "disabled",
            "the package does not enable nva"
        );
    }

    // Everything the package installed, to check after the purge.
    let files: Vec<String> = ok("dpkg-query", &["-L", PACKAGE])
        .lines()
        .map(str::to_string)
        .filter(|p| Path::new(p).is_file())
        .collect();
    assert!(files.len() >= 10, "dpkg -L nva: {files:?}");

    ok("apt-get", &["purge", "-y", "-q", PACKAGE]);
    assert!(!installed(), "dpkg still knows nva after the purge");
    let left: Vec<&String> = files
        .iter()
        .filter(|p| Path::new(p.as_str()).exists())
        .collect();
    assert!(left.is_empty(), "left after the purge: {left:?}");
    assert!(!Path::new("/etc/nva").exists(), "/etc/nva left");
    assert!(!Path::new(UNIT).exists());
    assert!(
        !Path::new("/var/lib/systemd/deb-systemd-helper-enabled/nva.service.dsh-also").exists(),
        "deb-systemd-helper state left"
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/nva.service").exists(),
        "an enablement symlink left"
    );
    // Debian keeps system groups on purge (files may still carry their id); the test's
    // own cleanup removes it if the test created it.
    assert!(group_exists(), "the nva group is kept on purge");
}
