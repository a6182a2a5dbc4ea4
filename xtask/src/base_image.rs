//! `base-image`: a Debian base image made by mmdebstrap from the machine's own Debian mirror, the
//! same bytes and the same image id wherever the mirror holds the same suite.
//!
//! mmdebstrap's tarball is reproducible under `SOURCE_DATE_EPOCH` (its sorted entries, clamped
//! times, no logs or machine id). The epoch is the suite's `Date:` in the mirror's `InRelease`,
//! so one mirror state gives one tarball. The image is then written as an engine archive by hand:
//! that tarball as its one layer and a config with no time but that epoch, so the image id (the
//! config's sha256) is the same on every engine that loads it. `docker import` would stamp the
//! time of the import instead.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::arch::{self, Arch};
use crate::builder::Images;
use crate::cache::Cache;
use crate::digest::{Key, hex};
use crate::engine::Engine;
use crate::flags;
use crate::host::{Host, log_failure};
use crate::progress::{Reporter, Terminal};

/// dpkg paths a slim image leaves out: manuals, translations, documentation but the copyright
/// files (the licences travel with the image), info pages and lintian overrides. The list stays
/// in the image's `/etc/dpkg/dpkg.cfg.d/`, so packages installed on top leave them out too.
const SLIM_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/lintian/*",
];

/// The name base images have in a shared cache, beside their content key (which covers the
/// suite, architecture and options).
pub const ENTRY: &str = "base";

/// The label that lists the image's packages, `name=version` separated by spaces.
pub const LABEL_PACKAGES: &str = "org.python-fips.base.packages";
/// The label that holds the content key a shared cache knows the image by.
pub const LABEL_KEY: &str = "org.python-fips.base.key";

impl flags::BaseImage {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let engine = Engine::detect(sh, self.host.engine.as_deref())?;
        let engine_arch = arch::parse(&engine.arch(sh)?)?;
        let target = match self.arch.as_deref() {
            Some(name) => arch::parse(name)?,
            None => engine_arch,
        };
        let foreign = target.name != engine_arch.name;
        let tag = self.tag(target, foreign);
        let mirror = match self.mirror_uri.clone() {
            Some(m) => m,
            None => apt_mirror()?,
        };
        let existing = engine.image_id(sh, &tag)?.filter(|_| !self.force);
        let release = match (release_file(&mirror, &self.suite), &existing) {
            (Ok(release), _) => release,
            // Without the mirror, an image that is there stays as it is.
            (Err(e), Some(id)) => {
                Terminal::new().message(&format!("warning: {e:#}; keeping {tag} as it is"));
                crate::progress::answer!("{tag} {id}");
                return Ok(());
            }
            (Err(e), None) => return Err(e),
        };
        let plan = Plan {
            suite: &self.suite,
            target,
            slim: self.slim,
            mirror: &mirror,
            epoch: epoch(&release, &self.suite)?,
        };
        let key = plan.key(&release);
        let cache = Cache::open(self.host.cache.as_deref())?;
        let ui = Terminal::new();
        let _lock = cache.lock(&ui)?;
        let remotes = crate::registry::shared_caches(self.cache_registry.as_deref())?;
        let images = Images::new(&Host::new(sh, &engine, &cache), &remotes, true);
        if let Some(id) = existing {
            let kept = kept(sh, &engine, &tag, &key, &ui)?;
            if let Kept::Ours = kept {
                images.share(ENTRY, &key, &tag, &ui)?;
            }
            if !matches!(kept, Kept::Outdated) {
                crate::progress::answer!("{tag} {id}");
                return Ok(());
            }
        }
        // `--force` makes the image here; otherwise a shared cache that has it gives it.
        if !self.force
            && let Some(id) = images.pull(ENTRY, &key, &tag, &ui)?
        {
            crate::progress::answer!("{tag} {id}");
            return Ok(());
        }
        let id = self.make_and_share(plan, &key, &tag, &images, &ui)?;
        crate::progress::answer!("{tag} {id}");
        Ok(())
    }

    /// Makes the image here, gives it to the shared caches and returns its id.
    fn make_and_share(
        &self,
        plan: Plan,
        key: &str,
        tag: &str,
        images: &Images,
        ui: &dyn Reporter,
    ) -> Result<String> {
        // mmdebstrap runs here, whatever engine loads the image: this machine must run the
        // target's binaries.
        if plan.target.name != std::env::consts::ARCH {
            arch::ensure_emulation(plan.target)?;
        }
        let scratch = images.host().scratch("base-image")?;
        let id = plan.make(&images.host(), scratch.path(), key, tag, ui)?;
        scratch.remove()?;
        images.give_all(ENTRY, key, tag, ui)?;
        Ok(id)
    }

    /// `--tag`, or `debian:<suite>[-slim]` (under Docker Hub's namespace for a foreign
    /// architecture); `name:latest` for a `--tag name`, as an engine archive names its image.
    fn tag(&self, target: &Arch, foreign: bool) -> String {
        let suite = &self.suite;
        let tag = self.tag.clone().unwrap_or_else(|| {
            let name = match self.slim {
                true => format!("debian:{suite}-slim"),
                false => format!("debian:{suite}"),
            };
            match foreign {
                true => target.foreign_image(&name),
                false => name,
            }
        });
        match tag.rsplit('/').next().is_some_and(|l| l.contains(':')) {
            true => tag,
            false => format!("{tag}:latest"),
        }
    }
}

/// What becomes of an image that exists under the tag.
enum Kept {
    /// This mirror state's image: it stays and is shared.
    Ours,
    /// Not made by `base-image`: it stays (only `--force` replaces it) and is not shared.
    Foreign,
    /// Made by `base-image` from another mirror state: it is made again.
    Outdated,
}

fn kept(sh: &Shell, engine: &Engine, tag: &str, key: &str, ui: &dyn Reporter) -> Result<Kept> {
    let labels = engine.image_labels(sh, tag)?;
    Ok(match labels.get(LABEL_KEY) {
        Some(k) if k == key => Kept::Ours,
        Some(_) => {
            ui.message(&format!(
                "{tag} was made from another state of the mirror; making it again"
            ));
            Kept::Outdated
        }
        None => {
            ui.message(&format!(
                "{tag} exists already and was not made by base-image; it stays as it is (pass \
                 --force to make it here)"
            ));
            Kept::Foreign
        }
    })
}

/// `SOURCE_DATE_EPOCH` if set, else the Unix time of the suite's `InRelease` `Date:`.
fn epoch(release: &[u8], suite: &str) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<u64>().with_context(|| {
            format!(
                "SOURCE_DATE_EPOCH is {v:?}, not a number of seconds; unset it to take the \
                 suite's date"
            )
        }),
        Err(_) => release_date(release).with_context(|| {
            format!("the mirror's InRelease of {suite} has no Date: field; set SOURCE_DATE_EPOCH")
        }),
    }
}

/// What a base image is made of.
struct Plan<'a> {
    suite: &'a str,
    target: &'static Arch,
    slim: bool,
    mirror: &'a str,
    epoch: u64,
}

impl Plan<'_> {
    /// The name of the image's log: `base-bookworm-slim-arm64`.
    fn log_name(&self) -> String {
        let slim = if self.slim { "-slim" } else { "" };
        format!("base-{}{slim}-{}", self.suite, self.target.deb)
    }

    /// The image's content key: the same mirror state (its `InRelease` bytes) and options give
    /// the same image.
    fn key(&self, release: &[u8]) -> String {
        Key::new()
            .set("suite", self.suite)
            .set("arch", self.target.deb)
            .set("mirror", self.mirror)
            .set("epoch", self.epoch.to_string())
            .set("options", self.options().join(" "))
            .set_sha256("release", release)
            .hex()
    }

    /// mmdebstrap's options but the suite, target and mirror.
    fn options(&self) -> Vec<String> {
        let mut options = vec![
            "--variant=minbase".to_string(),
            "--format=tar".to_string(),
            format!("--architectures={}", self.target.deb),
            // A merged /usr made by mmdebstrap itself: otherwise bookworm installs the usrmerge
            // package, and with it perl (about 50 MB).
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr".to_string(),
        ];
        if self.slim {
            options.extend(SLIM_EXCLUDES.iter().map(|o| format!("--dpkgopt={o}")));
        }
        options
    }

    /// Runs mmdebstrap into `scratch`, loads the image into the engine as `tag` and returns its id.
    fn make(
        &self,
        host: &Host,
        scratch: &Path,
        key: &str,
        tag: &str,
        ui: &dyn Reporter,
    ) -> Result<String> {
        let (sh, engine) = (host.shell(), host.engine());
        if cmd!(sh, "mmdebstrap --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_err()
        {
            bail!("mmdebstrap is not installed; install it with `apt-get install mmdebstrap`");
        }
        let rootfs = scratch.join("rootfs.tar");
        let log = host.log(&self.log_name());
        ui.message(&format!(
            "mmdebstrap {} ({}) from {}, SOURCE_DATE_EPOCH={} (log: {})",
            self.suite,
            self.target.deb,
            self.mirror,
            self.epoch,
            log.display()
        ));
        let options = self.options();
        let (suite, mirror) = (self.suite, self.mirror);
        let out = cmd!(sh, "mmdebstrap {options...} {suite} {rootfs} {mirror}")
            .env("SOURCE_DATE_EPOCH", self.epoch.to_string())
            .quiet()
            .ignore_status()
            .output()?;
        std::fs::write(
            &log,
            [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        )
        .with_context(|| format!("cannot write {}", log.display()))?;
        if !out.status.success() {
            let hint = format!(
                "is the mirror {mirror} reachable, and does it carry {suite} for {}? is this run \
                 as root?",
                self.target.deb
            );
            return Err(log_failure(
                &format!("mmdebstrap {suite}"),
                &log,
                20,
                Some(&hint),
            ));
        }
        let packages = packages_in(&rootfs)?;
        let archive = scratch.join("image.tar");
        let id = write_archive(&rootfs, &archive, &self.config(key, &packages)?, tag)?;
        engine.load(sh, &archive)?;
        // Tagged again by id: podman names an untagged archive's image by id only.
        engine.tag(sh, id.trim_start_matches("sha256:"), tag)?;
        Ok(id)
    }

    /// The image config: no time but the epoch, the packages and the key as labels.
    fn config(&self, key: &str, packages: &[String]) -> Result<serde_json::Value> {
        let created = crate::date::rfc3339(self.epoch);
        Ok(serde_json::json!({
            "architecture": self.target.deb,
            "os": "linux",
            "created": created,
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["bash"],
                "Labels": {
                    LABEL_PACKAGES: packages.join(" "),
                    LABEL_KEY: key,
                },
            },
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{
                "created": created,
                "created_by": format!("mmdebstrap {} {} {}", self.options().join(" "), self.suite, self.mirror),
            }],
        }))
    }
}

/// `name=version` of every installed package in the root filesystem tarball `rootfs`, sorted,
/// from its `var/lib/dpkg/status`.
fn packages_in(rootfs: &Path) -> Result<Vec<String>> {
    let status = crate::tarwalk::for_each_entry(
        rootfs,
        crate::tarwalk::Compression::None,
        |path, entry| {
            if path.trim_start_matches("./") != "var/lib/dpkg/status" {
                return Ok(None);
            }
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            Ok(Some(text))
        },
    )?;
    let status = status.with_context(|| {
        format!(
            "{} has no var/lib/dpkg/status: not a Debian root filesystem",
            rootfs.display()
        )
    })?;
    Ok(installed_packages(&status))
}

/// `name=version` of each stanza of a dpkg status file whose status is `installed`, sorted.
fn installed_packages(status: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(str::trim))
        };
        if let (Some(package), Some(version), Some(state)) =
            (field("Package:"), field("Version:"), field("Status:"))
            && state.ends_with(" installed")
        {
            out.push(format!("{package}={version}"));
        }
    }
    out.sort();
    out
}

/// Writes the engine archive `archive` (docker's `save` layout, which podman loads too) of one
/// layer, the tarball `layer`, with `config` (its diff id filled in) and the tag `tag`; returns
/// the image id, the sha256 of the config's bytes.
fn write_archive(
    layer: &Path,
    archive: &Path,
    config: &serde_json::Value,
    tag: &str,
) -> Result<String> {
    let diff_id = format!("sha256:{}", crate::digest::sha256_file(layer)?);
    let mut config = config.clone();
    config["rootfs"]["diff_ids"] = serde_json::json!([diff_id]);
    let config = serde_json::to_vec(&config)?;
    let config_hex = hex(&Sha256::digest(&config));
    let layer_name = format!("{}/layer.tar", diff_id.trim_start_matches("sha256:"));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [tag],
        "Layers": [layer_name],
    }]))?;
    let write = || -> Result<()> {
        let file = std::fs::File::create(archive)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
        let mut small = |name: &str, bytes: &[u8]| -> Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, name, bytes)?;
            Ok(())
        };
        small(&format!("{config_hex}.json"), &config)?;
        small("manifest.json", &manifest)?;
        let mut file = std::fs::File::open(layer)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(file.metadata()?.len());
        header.set_mode(0o644);
        tar.append_data(&mut header, &layer_name, &mut file)?;
        tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        Ok(())
    };
    write().with_context(|| format!("cannot write the image archive {}", archive.display()))?;
    Ok(format!("sha256:{config_hex}"))
}

/// The bytes of `dists/<suite>/InRelease` on `mirror` (`http(s)://` or `file://`).
fn release_file(mirror: &str, suite: &str) -> Result<Vec<u8>> {
    let url = format!("{}/dists/{suite}/InRelease", mirror.trim_end_matches('/'));
    let what = || format!("cannot read {url}; is the mirror reachable and does it carry {suite}?");
    if url.starts_with("file:") {
        let path = crate::download::file_url_path(&url).map_err(anyhow::Error::msg)?;
        return std::fs::read(path).with_context(what);
    }
    let response = crate::download::http_client(std::time::Duration::from_secs(60))?
        .get(&url)
        .send()
        .and_then(|r| r.error_for_status())
        .with_context(what)?;
    let mut bytes = Vec::new();
    response
        .take(16 << 20)
        .read_to_end(&mut bytes)
        .with_context(what)?;
    Ok(bytes)
}

/// The Unix time of a Release file's `Date:` field (`Sat, 11 Jul 2026 10:16:37 UTC`).
fn release_date(release: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(release);
    let date = text.lines().find_map(|l| l.strip_prefix("Date:"))?.trim();
    crate::date::parse_rfc2822(date)
}

/// The first Debian mirror URI in this machine's apt configuration.
pub fn apt_mirror() -> Result<String> {
    let mut uris = Vec::new();
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        // apt reads only these two kinds; a `.disabled` file is not configuration.
        paths.retain(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"));
        files.extend(paths);
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        uris.extend(mirror_uris(&text));
    }
    uris.into_iter()
        .find(|u| u.starts_with("http") && !u.contains("security"))
        .context("no Debian mirror in /etc/apt/sources.list{,.d}; pass --mirror-uri")
}

/// The URIs of an apt sources file, one-line (`deb URI ...`) or deb822 (`URIs: ...`) style.
fn mirror_uris(text: &str) -> Vec<String> {
    let mut uris = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("URIs:") {
            uris.extend(rest.split_whitespace().map(str::to_string));
        } else if let Some(rest) = line.strip_prefix("deb ") {
            uris.extend(
                rest.split_whitespace()
                    .find(|w| w.contains("://"))
                    .map(str::to_string),
            );
        }
    }
    uris
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_are_read_from_a_dpkg_status_file() {
        let status = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: bash\nStatus: install ok installed\nPriority: required\nVersion: 5.2.15-2+b9\n";
        assert_eq!(
            installed_packages(status),
            ["bash=5.2.15-2+b9", "libc6=2.36-9"]
        );
    }

    #[test]
    fn the_epoch_is_the_release_files_date() {
        let release = b"-----BEGIN PGP SIGNED MESSAGE-----\nOrigin: Debian\nDate: Sat, 11 Jul 2026 10:16:37 UTC\nSuite: stable\n";
        assert_eq!(release_date(release), Some(1_783_764_997));
        assert_eq!(release_date(b"Origin: Debian\n"), None);
    }

    #[test]
    fn a_file_mirror_gives_its_release_file_and_a_missing_suite_is_named() {
        let dir = crate::testutil::TempDir::new("release-file");
        let dists = dir.path().join("dists/bookworm");
        std::fs::create_dir_all(&dists).unwrap();
        std::fs::write(
            dists.join("InRelease"),
            b"Date: Sat, 11 Jul 2026 10:16:37 UTC\n",
        )
        .unwrap();
        let mirror = format!("file://{}", dir.path().display());
        let release = release_file(&mirror, "bookworm").unwrap();
        assert_eq!(release_date(&release), Some(1_783_764_997));
        let err = format!("{:#}", release_file(&mirror, "trixie").unwrap_err());
        assert!(err.contains("does it carry trixie"), "{err}");
    }

    #[test]
    fn mirror_uris_come_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm\n";
        let one_line = "# comment\ndeb [arch=amd64] http://o.example/debian bookworm main\n";
        assert_eq!(mirror_uris(deb822), ["http://m.example/debian"]);
        assert_eq!(mirror_uris(one_line), ["http://o.example/debian"]);
    }

    #[test]
    fn the_archive_names_the_image_by_its_configs_digest_and_carries_the_layer_whole() {
        let dir = crate::testutil::TempDir::new("base-archive");
        let layer = dir.path().join("rootfs.tar");
        std::fs::write(&layer, b"not really a tarball, but bytes to carry").unwrap();
        let archive = dir.path().join("image.tar");
        let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": []}});
        let id = write_archive(&layer, &archive, &config, "debian:test").unwrap();
        assert_eq!(crate::builder::archived_image_id(&archive).unwrap(), id);
        // The same inputs give the same id: nothing of the moment goes into it.
        let again = write_archive(&layer, &dir.path().join("again.tar"), &config, "x:y").unwrap();
        assert_eq!(id, again);
    }
}
