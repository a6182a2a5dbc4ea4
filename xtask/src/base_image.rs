//! `base-image`: a local base image from the machine's own Debian mirror, for sites without a registry.

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::arch;
use crate::cache::Cache;
use crate::engine::Engine;
use crate::flags;

impl flags::BaseImage {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let target = self.arch.as_deref().map(arch::parse).transpose()?;
        let engine = Engine::detect(sh, self.engine.as_deref())?;
        let engine_arch = engine.arch(sh)?;
        // A foreign architecture: debootstrap runs its second stage under QEMU, and the image
        // gets Docker Hub's name for that architecture's official image unless tagged otherwise.
        let foreign = target.filter(|t| t.name != engine_arch);
        let tag = self.tag.clone().unwrap_or_else(|| {
            let name = format!("debian:{}", self.debootstrap);
            foreign.map_or(name.clone(), |t| t.foreign_image(&name))
        });
        if !self.force && engine.image_id(sh, &tag)?.is_some() {
            eprintln!("{tag} exists already (pass --force to rebuild it)");
            return Ok(());
        }
        if cmd!(sh, "debootstrap --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_err()
        {
            bail!("debootstrap is not installed; install it with `apt-get install debootstrap`");
        }
        if let Some(target) = foreign {
            arch::ensure_emulation(target)?;
        }
        let mirror = match self.mirror_uri.clone() {
            Some(m) => m,
            None => apt_mirror()?,
        };
        let cache = Cache::open(self.cache.as_deref())?;
        let _lock = cache.lock(&crate::progress::Terminal::new())?;
        let root = cache.scratch("rootfs")?;
        let log = cache
            .dir("logs")
            .join(format!("base-image-{}.log", self.debootstrap));
        eprintln!(
            "debootstrap {} from {mirror} (log: {})",
            self.debootstrap,
            log.display()
        );
        let suite = &self.debootstrap;
        let arch_flag = foreign.map(|t| format!("--arch={}", t.deb));
        let out = cmd!(
            sh,
            "debootstrap --variant=minbase {arch_flag...} {suite} {root} {mirror}"
        )
        .quiet()
        .ignore_status()
        .output()?;
        std::fs::write(
            &log,
            [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        )
        .with_context(|| format!("cannot write {}", log.display()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            bail!(
                "debootstrap {suite} failed (log: {}):\n{}\nis the mirror {mirror} reachable? is this run as root?",
                log.display(),
                crate::engine::last_lines(&text, 20)
            );
        }
        // Nothing of the host's apt cache belongs in the image.
        let _ = std::fs::remove_dir_all(root.join("var/cache/apt/archives"));
        let res = match foreign {
            Some(target) => cache.scratch("base-image").and_then(|scratch| {
                let res = engine.import_rootfs_for(sh, &root, &scratch, target.platform, &tag);
                let _ = std::fs::remove_dir_all(&scratch);
                res
            }),
            None => engine.import_rootfs(sh, &root, &tag),
        };
        let _ = std::fs::remove_dir_all(&root);
        res?;
        println!("{tag}");
        Ok(())
    }
}

/// The first Debian mirror URI in this machine's apt configuration.
pub fn apt_mirror() -> Result<String> {
    let mut uris = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("URIs:") {
                    uris.extend(rest.split_whitespace().map(str::to_string));
                } else if let Some(rest) = line.trim().strip_prefix("deb ") {
                    uris.extend(
                        rest.split_whitespace()
                            .find(|w| w.contains("://"))
                            .map(str::to_string),
                    );
                }
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        for line in text.lines() {
            if let Some(rest) = line.trim().strip_prefix("deb ") {
                uris.extend(
                    rest.split_whitespace()
                        .find(|w| w.contains("://"))
                        .map(str::to_string),
                );
            }
        }
    }
    uris.into_iter()
        .find(|u| u.starts_with("http") && !u.contains("security"))
        .context("no Debian mirror in /etc/apt/sources.list{,.d}; pass --mirror-uri")
}
