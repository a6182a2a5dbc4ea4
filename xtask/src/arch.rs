//! Target architectures: their names in each tool's spelling, and the emulation a foreign one needs.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::flags::BuildArgs;

/// One architecture the tool can build for.
#[derive(Debug, PartialEq, Eq)]
pub struct Arch {
    /// The kernel's spelling, used in artifact names and keys: `x86_64`, `aarch64`.
    pub name: &'static str,
    /// Debian's architecture (`dpkg --add-architecture`, `:arm64` packages, mmdebstrap).
    pub deb: &'static str,
    /// The GNU triplet of the toolchain (`--host`, the cross tools' prefix).
    pub triplet: &'static str,
    /// OpenSSL's `Configure` target.
    pub openssl: &'static str,
    /// The engine's platform (`docker build --platform`).
    pub platform: &'static str,
    /// The Docker Hub namespace that holds this architecture's official images (`arm64v8/`).
    pub hub: &'static str,
    /// The name of its QEMU user emulator, as binfmt_misc registers it.
    pub qemu: &'static str,
    /// The tag `ldconfig -p` gives its libraries (`libc.so.6 (libc6,x86-64)`).
    pub ldconfig: &'static str,
}

/// Every architecture the tool knows, with the other spellings it accepts for each.
pub const KNOWN: [(Arch, &[&str]); 2] = [
    (
        Arch {
            name: "x86_64",
            deb: "amd64",
            triplet: "x86_64-linux-gnu",
            openssl: "linux-x86_64",
            platform: "linux/amd64",
            hub: "amd64/",
            qemu: "qemu-x86_64",
            ldconfig: "x86-64",
        },
        &["amd64", "x86-64"],
    ),
    (
        Arch {
            name: "aarch64",
            deb: "arm64",
            triplet: "aarch64-linux-gnu",
            openssl: "linux-aarch64",
            platform: "linux/arm64",
            hub: "arm64v8/",
            qemu: "qemu-aarch64",
            ldconfig: "AArch64",
        },
        &["arm64"],
    ),
];

/// The architecture spelled `name` in any of its accepted spellings.
pub fn parse(name: &str) -> Result<&'static Arch> {
    let wanted = name.trim().to_ascii_lowercase();
    for (arch, aliases) in &KNOWN {
        if arch.name == wanted || aliases.contains(&wanted.as_str()) {
            return Ok(arch);
        }
    }
    let known: Vec<String> = KNOWN
        .iter()
        .map(|(a, aliases)| format!("{} (or {})", a.name, aliases.join(", ")))
        .collect();
    bail!("unknown architecture {name:?}; known: {}", known.join("; "))
}

/// A comma-separated list of architectures (`x86_64,aarch64`), each once, in the order given.
pub fn parse_list(list: &str) -> Result<Vec<&'static Arch>> {
    let mut out: Vec<&'static Arch> = Vec::new();
    for name in list.split(',').filter(|s| !s.trim().is_empty()) {
        let arch = parse(name)?;
        if !out.contains(&arch) {
            out.push(arch);
        }
    }
    if out.is_empty() {
        bail!("--arch names no architecture; give one or more of x86_64, aarch64");
    }
    Ok(out)
}

/// For `--arch` naming several architectures: the arguments of one build per architecture, in
/// order, each with its own `--report` (`report.json` becomes `report.aarch64.json`). The builds
/// share one cache, so the downloads, the patched tree and the build interpreter are made once.
/// `None` for a single architecture or none.
pub fn per_arch(args: &BuildArgs) -> Result<Option<Vec<BuildArgs>>> {
    let Some(list) = args.arch.as_deref().filter(|l| l.contains(',')) else {
        return Ok(None);
    };
    let each = parse_list(list)?
        .into_iter()
        .map(|arch| {
            let mut one = args.clone();
            one.arch = Some(arch.name.to_string());
            one.report = args.report.as_deref().map(|r| suffixed(r, arch.name));
            one
        })
        .collect();
    Ok(Some(each))
}

/// `dir/report.json` with `arch` before the extension: `dir/report.aarch64.json`.
fn suffixed(path: &Path, arch: &str) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{arch}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{arch}"),
    };
    path.with_file_name(name)
}

impl Arch {
    /// The name of `image` (a recipe's `debian:bookworm`) for this architecture on an engine of
    /// another: the Docker Hub namespace of its official images, `arm64v8/debian:bookworm`.
    pub fn foreign_image(&self, image: &str) -> String {
        format!("{}{image}", self.hub)
    }
}

/// Fails unless this machine's kernel runs binaries of `arch` through QEMU user emulation
/// (binfmt_misc), naming the packages and commands that set it up.
pub fn ensure_emulation(arch: &Arch) -> Result<()> {
    ensure_emulation_in(Path::new("/proc/sys/fs/binfmt_misc"), arch)
}

fn ensure_emulation_in(binfmt: &Path, arch: &Arch) -> Result<()> {
    let setup = format!(
        "install QEMU user emulation with `apt-get install qemu-user-static binfmt-support`, then \
         `update-binfmts --enable {}`",
        arch.qemu
    );
    if !binfmt.join("status").exists() {
        bail!(
            "running {} binaries here needs QEMU user emulation, but binfmt_misc is not mounted at \
             {}; mount it with `mount -t binfmt_misc binfmt_misc {}` and {setup}",
            arch.name,
            binfmt.display(),
            binfmt.display()
        );
    }
    let entry = binfmt.join(arch.qemu);
    match std::fs::read_to_string(&entry) {
        Ok(text) if text.lines().next() == Some("enabled") => Ok(()),
        Ok(_) => bail!(
            "QEMU emulation of {} is registered but disabled ({}); enable it with \
             `update-binfmts --enable {}`",
            arch.name,
            entry.display(),
            arch.qemu
        ),
        Err(_) => bail!(
            "running {} binaries here needs QEMU user emulation, and {} does not exist; {setup}",
            arch.name,
            entry.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_names_one_architecture() {
        assert_eq!(parse("aarch64").unwrap().name, "aarch64");
        assert_eq!(parse("arm64").unwrap().name, "aarch64");
        assert_eq!(parse("AMD64").unwrap().name, "x86_64");
        assert_eq!(parse("x86_64").unwrap().deb, "amd64");
        let list = parse_list("x86_64,arm64,aarch64").unwrap();
        let names: Vec<&str> = list.iter().map(|a| a.name).collect();
        assert_eq!(names, ["x86_64", "aarch64"]);
    }

    #[test]
    fn several_architectures_give_one_build_each_with_its_own_report() {
        let args = BuildArgs {
            arch: Some("x86_64,arm64".into()),
            report: Some(PathBuf::from("/tmp/r.json")),
            ..BuildArgs::default()
        };
        let each = per_arch(&args).unwrap().unwrap();
        let got: Vec<(Option<&str>, Option<&Path>)> = each
            .iter()
            .map(|a| (a.arch.as_deref(), a.report.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (Some("x86_64"), Some(Path::new("/tmp/r.x86_64.json"))),
                (Some("aarch64"), Some(Path::new("/tmp/r.aarch64.json")))
            ]
        );
        let one = BuildArgs {
            arch: Some("arm64".into()),
            ..BuildArgs::default()
        };
        assert!(per_arch(&one).unwrap().is_none());
    }

    #[test]
    fn an_unknown_architecture_lists_the_known_ones() {
        let err = parse("riscv64").unwrap_err().to_string();
        assert!(err.contains("unknown architecture \"riscv64\""), "{err}");
        assert!(err.contains("x86_64") && err.contains("aarch64"), "{err}");
        assert!(err.contains("arm64"), "{err}");
        assert!(parse_list(",").is_err());
    }

    #[test]
    fn missing_emulation_names_the_packages_and_the_mount() {
        let dir = crate::testutil::TempDir::new("binfmt");
        let arm = parse("arm64").unwrap();
        let err = ensure_emulation_in(dir.path(), arm)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mount -t binfmt_misc"), "{err}");
        assert!(
            err.contains("qemu-user-static") && err.contains("binfmt-support"),
            "{err}"
        );
        std::fs::write(dir.path().join("status"), "enabled\n").unwrap();
        let err = ensure_emulation_in(dir.path(), arm)
            .unwrap_err()
            .to_string();
        assert!(err.contains("qemu-aarch64 does not exist"), "{err}");
        assert!(err.contains("apt-get install qemu-user-static binfmt-support"));
        std::fs::write(dir.path().join("qemu-aarch64"), "disabled\n").unwrap();
        let err = ensure_emulation_in(dir.path(), arm)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("update-binfmts --enable qemu-aarch64"),
            "{err}"
        );
        std::fs::write(dir.path().join("qemu-aarch64"), "enabled\nflags: PF\n").unwrap();
        ensure_emulation_in(dir.path(), arm).unwrap();
    }
}
