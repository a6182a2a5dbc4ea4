//! The builder image: the recipe's base image plus its build dependencies, tagged by content key.
//!
//! The same recipe (a base image plus packages, keyed and tagged by content) also makes the
//! helper images, such as the one `--check-reproducible` runs diffoscope in.

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::arch::Arch;
use crate::cache::Cache;
use crate::catalog::BuilderSpec;
use crate::digest::Key;
use crate::engine::{Container, ContainerSpec, Engine};
use crate::host::{Got, Host, KeyedImage, Made, Step};
use crate::progress::{Reporter, StepEvent};
use crate::store::Remote;

const SCRIPT: &str = include_str!("pipeline/builder.sh");

/// A builder image and the base image it was made from, both by id.
pub struct Builder {
    pub id: String,
    pub base_id: String,
}

/// Where images are made and found: the engine, the cache (for logs and scratch files) and the
/// shared caches (`--cache-registry`) an image may come from and is given to.
pub struct Images<'a> {
    sh: &'a Shell,
    engine: &'a Engine,
    cache: &'a Cache,
    shared: &'a [Box<dyn Remote + Sync>],
    /// Build an image that neither the engine nor a shared cache has (`rebuild` never does: a
    /// builder made again installs that day's packages).
    make: bool,
}

impl<'a> Images<'a> {
    /// Images made with `host`'s engine, found in and given to `shared`; with `make`, built
    /// when no one has them.
    pub fn new(host: &Host<'a>, shared: &'a [Box<dyn Remote + Sync>], make: bool) -> Images<'a> {
        Images {
            sh: host.shell(),
            engine: host.engine(),
            cache: host.cache(),
            shared,
            make,
        }
    }

    /// The builder image for `spec`: the engine's, else one of `shared`'s, else built here (and
    /// given to `shared`), and tagged.
    pub fn ensure(&self, spec: &BuilderSpec, ui: &dyn Reporter) -> Result<Builder> {
        let base_id = self.base_id(spec)?;
        let id = self.ensure_with(spec, &base_id, "builder", SCRIPT, ui)?;
        Ok(Builder { id, base_id })
    }

    /// Returns the id of the builder image that cross-compiles for `target`: the recipe's base
    /// image with the distribution's cross toolchain, and the recipe's `-dev` packages installed
    /// for the target (Debian multiarch: `dpkg --add-architecture`, `libffi-dev:arm64`).
    /// `native` is what `ensure` gave for `spec`.
    pub fn ensure_cross(
        &self,
        spec: &BuilderSpec,
        native: &Builder,
        target: &Arch,
        ui: &dyn Reporter,
    ) -> Result<String> {
        if spec.apt.is_empty() {
            bail!(
                "cross-compiling for {} needs a Debian-family builder (its cross toolchain and \
             multiarch -dev packages); the recipe's builder {} lists no apt packages",
                target.name,
                spec.base_image
            );
        }
        let cross = BuilderSpec {
            base_image: spec.base_image.clone(),
            apt: cross_packages(&spec.apt, target),
            dnf: vec![],
        };
        let script = format!(
            "# A cross builder: the target's libraries are the distribution's multiarch packages.\n\
         dpkg --add-architecture {}\n{SCRIPT}",
            target.deb
        );
        let name = format!("builder-{}", target.name);
        self.ensure_with(&cross, &native.base_id, &name, &script, ui)
    }

    /// Returns the id of the image `python-fips-<name>:<key>`: `spec.base_image` (a name or an
    /// id) plus `spec`'s packages, building and tagging it if it is missing.
    pub fn ensure_image(
        &self,
        spec: &BuilderSpec,
        name: &str,
        ui: &dyn Reporter,
    ) -> Result<String> {
        let base_id = self.base_id(spec)?;
        self.ensure_with(spec, &base_id, name, SCRIPT, ui)
    }

    /// `ensure_image` with `script` installing the packages on the base image `base_id` (the id
    /// of `spec.base_image`).
    fn ensure_with(
        &self,
        spec: &BuilderSpec,
        base_id: &str,
        name: &str,
        script: &str,
        ui: &dyn Reporter,
    ) -> Result<String> {
        let key = Key::new()
            .set("base-image", base_id)
            .set("script", script)
            .set("apt", spec.apt.join(" "))
            .set("dnf", spec.dnf.join(" "))
            .hex();
        let tag = format!("python-fips-{name}:{}", &key[..16]);
        let tags = [tag.clone()];
        let image = KeyedImage {
            name,
            key: &key,
            label: None,
            tags: &tags,
        };
        let (id, got) = self.host().keyed_image(&image, ui, || {
            if let Some(id) = self.pull(name, &key, &tag, ui)? {
                return Ok(Made::Fetched(id));
            }
            if !self.make {
                bail!(
                    "the image {tag} is neither in {} nor in a shared cache, and this command \
                     does not make it (made again, it would install that day's packages); pass \
                     --cache-registry with the registry the build gave it to",
                    self.engine
                );
            }
            let id = self.install(spec, name, script, &key, &tag, ui)?;
            Ok(Made::Built {
                id,
                note: tag.clone(),
            })
        })?;
        match got {
            // A shared cache that lacks it gets it, so that other machines find this builder.
            Got::Cached => self.share(name, &key, &tag, ui)?,
            Got::Built => self.give_all(name, &key, &tag, ui)?,
            Got::Fetched => {}
        }
        Ok(id)
    }

    /// The id of `spec`'s base image, pulled if the engine lacks it.
    fn base_id(&self, spec: &BuilderSpec) -> Result<String> {
        let (sh, engine) = (self.sh, self.engine);
        let mut base_id = engine.image_id(sh, &spec.base_image)?;
        if base_id.is_none() && engine.pull(sh, &spec.base_image) {
            base_id = engine.image_id(sh, &spec.base_image)?;
        }
        if let Some(id) = base_id {
            return Ok(id);
        }
        let hint = match base_image_command(&spec.base_image) {
            Some(command) => format!("without a registry, make it with `{command}`"),
            None => format!(
                "load it with `{}` or point the recipe at an image you have",
                engine.load_hint()
            ),
        };
        bail!(
            "the base image {} is not available to {engine} and cannot be pulled; {hint}\n\
             (on a remote engine, or to share builds with another machine, load that machine's \
             image instead, e.g. `{}`: the same base image gives the same builder and the same \
             stage keys)",
            spec.base_image,
            engine.transfer_hint(&spec.base_image)
        )
    }

    /// Installs `spec`'s packages with `script` in a container of its base image, commits it as
    /// `tag` and returns the image's id.
    fn install(
        &self,
        spec: &BuilderSpec,
        name: &str,
        script: &str,
        key: &str,
        tag: &str,
        ui: &dyn Reporter,
    ) -> Result<String> {
        let host = self.host();
        let what = format!("{name}-{}", &key[..12]);
        let log = host.log(&what);
        let container = ContainerSpec {
            env: vec![
                ("APT_PACKAGES".into(), spec.apt.join(" ")),
                ("DNF_PACKAGES".into(), spec.dnf.join(" ")),
            ],
            command: vec![
                "sh".into(),
                "-c".into(),
                "exec sh -eux /builder.sh 2>&1".into(),
            ],
            ..host.spec(&what, &spec.base_image)
        };
        let step = Step {
            name,
            doing: "running",
            log: &log,
            exit_fails: true,
        };
        let put = |c: &Container| c.put_file("/", "builder.sh", script.as_bytes(), 0o755);
        let container = host
            .run_step(&step, &container, put, |_| {}, ui)?
            .succeeded(
                &format!("installing the build dependencies into {}", spec.base_image),
                30,
                Some(
                    "check the package names in the recipe's [builder] section and that the base \
                 image reaches its mirror",
                ),
            )?;
        container.commit(tag)?;
        let id = self
            .engine
            .image_id(self.sh, tag)?
            .with_context(|| format!("{tag} vanished right after it was committed"))?;
        drop(container);
        Ok(id)
    }

    /// The shell, engine and cache images are made with.
    pub fn host(&self) -> Host<'_> {
        Host::new(self.sh, self.engine, self.cache)
    }

    /// Gives the local image `tag` to each shared cache that lacks it as `name`-`key`.
    pub(crate) fn share(&self, name: &str, key: &str, tag: &str, ui: &dyn Reporter) -> Result<()> {
        let mut lacking: Vec<&(dyn Remote + Sync)> = Vec::new();
        for remote in self.shared {
            match remote.has(name, key) {
                Ok(true) => {}
                Ok(false) => lacking.push(remote.as_ref()),
                Err(e) => ui.message(&format!(
                    "warning: the stage cache {} cannot say whether it has {name}-{}: {e:#}; \
                     the build goes on",
                    remote.name(),
                    &key[..12]
                )),
            }
        }
        self.push(name, key, tag, &lacking, ui)
    }

    /// Loads the image `name`-`key` from the first shared cache that has it and returns its id.
    /// A shared cache that fails costs a warning: the image is then built here.
    pub(crate) fn pull(
        &self,
        name: &str,
        key: &str,
        tag: &str,
        ui: &dyn Reporter,
    ) -> Result<Option<String>> {
        let (sh, engine) = (self.sh, self.engine);
        for remote in self.shared {
            let scratch = self.host().scratch(name)?;
            let loaded = remote
                .fetch(name, key, FILES, scratch.path())
                .and_then(|digest| {
                    let Some(digest) = digest else {
                        return Ok(None);
                    };
                    let archive = scratch.join(IMAGE_FILE);
                    engine.load(sh, &archive)?;
                    // Tagged again by id: an archive podman saved names the image localhost/….
                    let id = archived_image_id(&archive)?;
                    engine.tag(sh, id.trim_start_matches("sha256:"), tag)?;
                    Ok(Some((digest, id)))
                });
            scratch.remove()?;
            match loaded {
                Ok(Some((digest, id))) => {
                    ui.step(
                        name,
                        StepEvent::Skipped {
                            what: &format!("pulled from {} ({tag}, {digest})", remote.name()),
                        },
                    );
                    return Ok(Some(id));
                }
                Ok(None) => {}
                Err(e) => ui.message(&format!(
                    "warning: the stage cache {} did not give {name}-{}: {e:#}; building it here",
                    remote.name(),
                    &key[..12]
                )),
            }
        }
        Ok(None)
    }

    /// Gives every shared cache the image `tag` as `name` under `key`.
    pub fn give_all(&self, name: &str, key: &str, tag: &str, ui: &dyn Reporter) -> Result<()> {
        let all: Vec<&(dyn Remote + Sync)> = self.shared.iter().map(|r| r.as_ref()).collect();
        self.push(name, key, tag, &all, ui)
    }

    /// Gives the image `tag` to each of `to`, as `name`-`key`.
    fn push(
        &self,
        name: &str,
        key: &str,
        tag: &str,
        to: &[&(dyn Remote + Sync)],
        ui: &dyn Reporter,
    ) -> Result<()> {
        let (sh, engine) = (self.sh, self.engine);
        if to.is_empty() {
            return Ok(());
        }
        let scratch = self.host().scratch(name)?;
        let saved = engine.save(sh, tag, &scratch.join(IMAGE_FILE));
        for remote in to {
            if let Err(e) = saved
                .as_ref()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .and_then(|_| remote.push(name, key, scratch.path()))
            {
                ui.message(&format!(
                    "warning: the stage cache {} did not take {name}-{}: {e:#}; the build goes on",
                    remote.name(),
                    &key[..12]
                ));
            }
        }
        scratch.remove()
    }
}

/// The recipe's apt list for a cross builder: `crossbuild-essential-<arch>` added, and each
/// `-dev` package (the libraries the tree links) taken in the target's architecture instead.
pub fn cross_packages(apt: &[String], target: &Arch) -> Vec<String> {
    let mut out: Vec<String> = apt
        .iter()
        .map(|p| match p.ends_with("-dev") {
            true => format!("{p}:{}", target.deb),
            false => p.clone(),
        })
        .collect();
    out.push(format!("crossbuild-essential-{}", target.deb));
    out
}

/// The id of the image in an engine's image archive (`save`): its config's digest, which both
/// docker and podman name in the archive's `manifest.json` (`<hex>.json`, or
/// `blobs/sha256/<hex>` in an OCI layout).
pub(crate) fn archived_image_id(archive: &std::path::Path) -> Result<String> {
    let manifest = crate::tarwalk::for_each_entry(
        archive,
        crate::tarwalk::Compression::None,
        |path, entry| {
            if path != "manifest.json" {
                return Ok(None);
            }
            let mut text = String::new();
            std::io::Read::read_to_string(entry, &mut text)?;
            Ok(Some(text))
        },
    )?
    .with_context(|| format!("{} holds no manifest.json", archive.display()))?;
    let manifest: serde_json::Value = serde_json::from_str(&manifest)
        .with_context(|| format!("the manifest.json of {} is not JSON", archive.display()))?;
    let config = manifest[0]["Config"].as_str().unwrap_or_default();
    let hex = config
        .trim_end_matches(".json")
        .rsplit('/')
        .next()
        .unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "the manifest.json of {} names no image config ({config:?})",
            archive.display()
        );
    }
    Ok(format!("sha256:{hex}"))
}

/// The `base-image` command that makes `image` when it is one of the names that command gives
/// (`debian:bookworm`, `debian:bookworm-slim`, `arm64v8/debian:bookworm-slim`), else `None`.
pub fn base_image_command(image: &str) -> Option<String> {
    let (arch, name) = crate::arch::KNOWN
        .iter()
        .find_map(|(a, _)| image.strip_prefix(a.hub).map(|rest| (Some(a), rest)))
        .unwrap_or((None, image));
    let suite = name.strip_prefix("debian:")?;
    let (suite, slim) = match suite.strip_suffix("-slim") {
        Some(s) => (s, " --slim"),
        None => (suite, ""),
    };
    if suite.is_empty() || !suite.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let arch = arch.map_or(String::new(), |a| format!(" --arch {}", a.deb));
    Some(format!(
        "cargo xtask base-image --suite {suite}{slim}{arch}"
    ))
}

/// The file a shared builder image entry holds: the engine's image archive.
const IMAGE_FILE: &str = "image.tar";
/// The files of a builder image's entry in a shared cache.
const FILES: &[&str] = &[IMAGE_FILE];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_archive_names_its_image_by_its_config_digest() {
        let dir = crate::testutil::TempDir::new("archive-id");
        let hex = "ab".repeat(32);
        for config in [format!("{hex}.json"), format!("blobs/sha256/{hex}")] {
            let archive = dir.path().join("image.tar");
            let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            let manifest = serde_json::json!([{ "Config": config, "RepoTags": ["localhost/b:1"] }]);
            let bytes = serde_json::to_vec(&manifest).unwrap();
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, "manifest.json", bytes.as_slice())
                .unwrap();
            tar.finish().unwrap();
            drop(tar);
            assert_eq!(
                archived_image_id(&archive).unwrap(),
                format!("sha256:{hex}")
            );
        }
    }

    #[test]
    fn the_hint_for_a_missing_base_names_the_command_that_makes_it() {
        assert_eq!(
            base_image_command("debian:bookworm").unwrap(),
            "cargo xtask base-image --suite bookworm"
        );
        assert_eq!(
            base_image_command("arm64v8/debian:bookworm-slim").unwrap(),
            "cargo xtask base-image --suite bookworm --slim --arch arm64"
        );
        assert_eq!(base_image_command("rockylinux:9"), None);
    }

    #[test]
    fn a_cross_builder_takes_the_dev_packages_for_the_target_and_adds_its_toolchain() {
        let apt: Vec<String> = ["build-essential", "perl", "zlib1g-dev", "libffi-dev"]
            .map(String::from)
            .to_vec();
        let arm = crate::arch::parse("arm64").unwrap();
        assert_eq!(
            cross_packages(&apt, arm),
            [
                "build-essential",
                "perl",
                "zlib1g-dev:arm64",
                "libffi-dev:arm64",
                "crossbuild-essential-arm64"
            ]
        );
    }
}
