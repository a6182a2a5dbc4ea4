//! `image`: the runtime image, the recipe's runtime base plus the libraries the tree links plus the tree.
//!
//! The image is what applications build `FROM`. Its build context (the filled `Dockerfile` and
//! the tarball) is assembled in the cache's `tmp/`, and the engine builds it. The system packages
//! it installs are derived from the tree's own ELF `NEEDED` entries, mapped to package names in
//! a container of the builder image, which has every one of those libraries installed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::arch::Arch;
use crate::build::Build;
use crate::build_info::BuildInfo;
use crate::cache::Cache;
use crate::digest::Key;
use crate::engine::{Container, ContainerSpec, Engine};
use crate::flags::Runtime;
use crate::host::{ContextBuild, Got, Host, KeyedImage, Made, Scratch, Step, Unshown, log_failure};
use crate::progress::{Reporter, StepEvent};
use crate::ship::Artifact;
use crate::tarwalk::{self, Compression};
use crate::{catalog, elf};

const DOCKERFILE: &str = include_str!("image/Dockerfile.in");
/// The distroless image: the base image's build as its first stage, then FROM scratch.
const DISTROLESS_DOCKERFILE: &str = include_str!("image/Dockerfile-distroless.in");
/// Fills the distroless image's file system in its first stage.
const DISTROLESS_ROOTFS: &str = include_str!("image/distroless-rootfs.sh");
const DEPS_SCRIPT: &str = include_str!("image/runtime-deps.sh");
/// The tarball's name inside the build context (the Dockerfile `ADD`s it).
const CONTEXT_TARBALL: &str = "python-fips.tar.gz";

pub const LABEL_VERSION: &str = "org.opencontainers.image.version";
pub const LABEL_OPENSSL: &str = "org.python-fips.openssl.version";
pub const LABEL_PROVIDER: &str = "org.python-fips.fips-provider.version";
pub const LABEL_TARBALL: &str = "org.python-fips.tarball.sha256";
/// The content key of the image: everything that can change what the build makes.
pub const LABEL_KEY: &str = "org.python-fips.image.key";
/// `base` or `distroless`.
pub const LABEL_RUNTIME: &str = "org.python-fips.runtime";

/// A built (or found) runtime image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeImage {
    pub id: String,
    pub tags: Vec<String>,
    pub cached: bool,
    /// Its content key (the `org.python-fips.image.key` label), when known.
    pub key: Option<String>,
}

/// The largest `BUILD-INFO.json` read from a tarball.
const MAX_BUILD_INFO: u64 = 1 << 20;

/// What the tarball's `BUILD-INFO.json` says about the tree, as far as the image needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeInfo {
    pub python: String,
    pub openssl: String,
    pub provider: String,
    /// The catalog version of the provider's source: `provider`, or a test source's own version
    /// (`3.1.2-openssl-src`) when the source only carries the release's tree.
    pub provider_source: String,
    /// The CMVP certificate of the provider's release, if it is a validated one.
    pub cmvp: Option<String>,
    pub licenses: Vec<String>,
    /// Whether the project's patches were applied (false for the `--no-fips-patch` control).
    pub patched: bool,
    /// The builder image the tree was built in (an image id).
    pub builder_image: String,
    /// The architecture the tree is for (absent in trees made before `--arch`).
    pub arch: Option<String>,
}

impl TreeInfo {
    /// Reads `opt/python-fips/BUILD-INFO.json` from the tarball.
    pub fn read(tarball: &Path) -> Result<TreeInfo> {
        let text = TreeInfo::read_build_info(tarball)?;
        TreeInfo::parse(&text)
            .with_context(|| format!("the BUILD-INFO.json of {}", tarball.display()))
    }

    /// The text of the tarball's `opt/python-fips/BUILD-INFO.json`.
    pub fn read_build_info(tarball: &Path) -> Result<String> {
        let found = tarwalk::for_each_entry(tarball, Compression::Gzip, |path, entry| {
            if Path::new(path) != Path::new("opt/python-fips/BUILD-INFO.json") {
                return Ok(None);
            }
            let mut text = String::new();
            entry.take(MAX_BUILD_INFO + 1).read_to_string(&mut text)?;
            if text.len() as u64 > MAX_BUILD_INFO {
                bail!(
                    "the BUILD-INFO.json of {} is more than 1 MiB (a tree's is a few KiB); \
                     is it a tarball made by `cargo xtask python`?",
                    tarball.display()
                );
            }
            Ok(Some(text))
        })?;
        if let Some(text) = found {
            return Ok(text);
        }
        bail!(
            "{} has no opt/python-fips/BUILD-INFO.json; is it a tarball made by `cargo xtask python`?",
            tarball.display()
        )
    }

    fn parse(text: &str) -> Result<TreeInfo> {
        let info = BuildInfo::parse(text)?;
        let field = |name: &str, value: &str| -> Result<String> {
            if value.is_empty() {
                bail!("no string at {name}");
            }
            Ok(value.to_string())
        };
        let mut licenses = Vec::new();
        for (name, source) in [
            ("python", &info.python),
            ("openssl", &info.openssl),
            ("fips_provider.source", &info.fips_provider.source),
        ] {
            let license = field(&format!("{name}.license"), &source.license)?;
            if !licenses.contains(&license) {
                licenses.push(license);
            }
        }
        Ok(TreeInfo {
            python: field("python.version", &info.python.version)?,
            openssl: field("openssl.version", &info.openssl.version)?,
            provider: field(
                "fips_provider.source.version",
                info.fips_provider.source.release(),
            )?,
            provider_source: field(
                "fips_provider.source.version",
                &info.fips_provider.source.version,
            )?,
            cmvp: info.fips_provider.cmvp.certificate().map(str::to_string),
            licenses,
            patched: !info.patches.is_empty(),
            builder_image: field("builder_image.id", &info.builder_image.id)?,
            arch: Some(info.arch).filter(|a| !a.is_empty()),
        })
    }

    /// `python-fips:<python>` and `python-fips:<minor>`, with `-unpatched` for the control and
    /// `-distroless` for that runtime.
    pub fn default_tags(&self, runtime: Runtime) -> Vec<String> {
        let mut suffix = if self.patched { "" } else { "-unpatched" }.to_string();
        if runtime == Runtime::Distroless {
            suffix.push_str("-distroless");
        }
        vec![
            format!("python-fips:{}{suffix}", self.python),
            format!("python-fips:{}{suffix}", catalog::minor_of(&self.python)),
        ]
    }
}

/// Everything an image build reads.
pub struct Plan<'a> {
    pub tarball: &'a Path,
    pub sha256: &'a str,
    pub info: &'a TreeInfo,
    pub base_image: &'a str,
    pub builder_image: &'a str,
    pub arch: &'static Arch,
    pub tags: Vec<String>,
    pub runtime: Runtime,
    /// Whether the run may write in the cache (not under `--offline`).
    pub store: bool,
}

/// What a build's runtime image and its verification need besides the tarball: where they are
/// made (engine, cache) and the facts of the build they come from.
pub struct ImageInputs<'a> {
    pub sh: &'a Shell,
    pub engine: &'a Engine,
    pub cache: &'a Cache,
    /// The runtime base image: the recipe's, or the target's variant of it for a cross build.
    pub base_image: String,
    /// The builder image the tree was built in (the package mapping runs in it).
    pub builder_image: &'a str,
    /// The tree's architecture.
    pub arch: &'static Arch,
    pub runtime: Runtime,
    /// `--arch` named an architecture.
    pub arch_named: bool,
    /// The tree was cross-compiled.
    pub cross: bool,
    /// The run may write in the cache (not under `--offline`).
    pub store: bool,
}

impl<'a> ImageInputs<'a> {
    /// The inputs of `build`'s runtime image.
    pub fn of(build: &'a Build) -> ImageInputs<'a> {
        let recipe_base = &build.recipe().runtime.base_image;
        let facts = build.facts();
        ImageInputs {
            sh: build.shell(),
            engine: build.engine(),
            cache: build.cache(),
            base_image: match facts.cross() {
                true => facts.arch.foreign_image(recipe_base),
                false => recipe_base.clone(),
            },
            builder_image: &facts.builder_id,
            arch: facts.arch,
            runtime: build.config().runtime,
            arch_named: build.config().target.is_some(),
            cross: facts.cross(),
            store: !build.resolved().offline,
        }
    }
}

/// The runtime image of `artifact`, tagged `tags` (or the default tags).
pub fn runtime_image(
    inputs: &ImageInputs,
    artifact: &Artifact,
    tags: &[String],
    ui: &dyn Reporter,
) -> Result<RuntimeImage> {
    let info = TreeInfo::read(&artifact.tarball)?;
    let tags = if tags.is_empty() {
        arch_tags(
            info.default_tags(inputs.runtime),
            inputs.arch.name,
            inputs.arch_named,
            inputs.cross,
        )
    } else {
        tags.to_vec()
    };
    let plan = Plan {
        tarball: &artifact.tarball,
        sha256: &artifact.sha256,
        info: &info,
        base_image: &inputs.base_image,
        builder_image: inputs.builder_image,
        arch: inputs.arch,
        tags,
        runtime: inputs.runtime,
        store: inputs.store,
    };
    ensure(inputs.sh, inputs.engine, inputs.cache, &plan, ui)
}

/// The runtime image of a tarball made earlier: one labelled with its sha256 if there is one,
/// else built from the recipe of its CPython minor and the builder image it was built in.
pub fn for_tarball(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    tarball: &Path,
    ui: &dyn Reporter,
) -> Result<RuntimeImage> {
    let sha256 = crate::digest::sha256_file(tarball)?;
    // The base runtime image: a distroless one of the same tarball carries the same label.
    let distroless = engine.images_with_label(sh, LABEL_RUNTIME, "distroless")?;
    if let Some(id) = engine
        .images_with_label(sh, LABEL_TARBALL, &sha256)?
        .into_iter()
        .find(|id| !distroless.contains(id))
    {
        ui.step(
            "image",
            StepEvent::Skipped {
                what: &format!("found {id}"),
            },
        );
        return Ok(RuntimeImage {
            id,
            tags: vec![],
            cached: true,
            key: None,
        });
    }
    let info = TreeInfo::read(tarball)?;
    let minor = catalog::minor_of(&info.python);
    let recipe = catalog::load_recipe_file(&catalog::recipes_dir(), &minor)?;
    if engine.image_id(sh, &info.builder_image)?.is_none() {
        bail!(
            "the builder image {} that {} was built in is gone, and its runtime image needs it to \
             find the packages of the libraries the tree links; rebuild with \
             `cargo xtask image --version {}` (plus the flags of the original build)",
            info.builder_image,
            tarball.display(),
            info.python
        );
    }
    let engine_arch = crate::arch::parse(&engine.arch(sh)?)?;
    let arch = match &info.arch {
        Some(arch) => crate::arch::parse(arch)?,
        None => engine_arch,
    };
    let base_image = match arch == engine_arch {
        false => arch.foreign_image(&recipe.runtime.base_image),
        true => recipe.runtime.base_image.clone(),
    };
    let plan = Plan {
        tarball,
        sha256: &sha256,
        info: &info,
        base_image: &base_image,
        builder_image: &info.builder_image,
        arch,
        tags: arch_tags(
            info.default_tags(Runtime::Base),
            arch.name,
            false,
            arch != engine_arch,
        ),
        runtime: Runtime::Base,
        store: true,
    };
    ensure(sh, engine, cache, &plan, ui)
}

/// The tags of an image for `arch`: the plain tags (`python-fips:3.13`) always name the engine's
/// own architecture, so a foreign image gets only the per-architecture ones
/// (`python-fips:3.13-aarch64`); a native one gets those too when `--arch` was given.
fn arch_tags(plain: Vec<String>, arch: &str, asked: bool, foreign: bool) -> Vec<String> {
    let suffixed = plain.iter().map(|t| format!("{t}-{arch}"));
    match (foreign, asked) {
        (true, _) => suffixed.collect(),
        (false, true) => plain.iter().cloned().chain(suffixed).collect(),
        (false, false) => plain,
    }
}

/// Builds the image of `plan` unless one with the same content key exists, and tags it.
pub fn ensure(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    plan: &Plan,
    ui: &dyn Reporter,
) -> Result<RuntimeImage> {
    let host = Host::new(sh, engine, cache);
    let Some(base_id) = engine.image_id(sh, plan.base_image)? else {
        let hint = match crate::builder::base_image_command(plan.base_image) {
            Some(command) => format!("make it with `{command}`"),
            None => format!("load it with `{}`", engine.load_hint()),
        };
        bail!(
            "the runtime base image {} is not available to {} and there is no registry to pull it \
             from; {hint}",
            plan.base_image,
            engine,
        );
    };
    // An image of another architecture is built (its RUN steps run the finished tree) under
    // QEMU user emulation, on a base image of that architecture.
    let platform = foreign_platform(sh, engine, plan)?;
    let key = image_key(plan, &base_id);
    let image = KeyedImage {
        name: "image",
        key: &key,
        label: Some(LABEL_KEY),
        tags: &plan.tags,
    };
    let (id, got) = host.keyed_image(&image, ui, || {
        let needs = elf::external_needs(plan.tarball)?;
        let packages = packages_for(sh, engine, cache, plan, &needs, &key, ui)?;
        let build = ContextBuild {
            name: "image",
            what: building(plan),
            scratch: "image",
            log: host.stamped_log(&format!("image-{}", &key[..12])),
            platform,
            tags: &plan.tags,
            labels: vec![],
            hint: Some(build_hint(engine, plan, &packages)),
        };
        let id = host.build_context(&build, ui, |context| {
            write_context(context, plan, &base_id, &key, &packages)
        })?;
        let note = format!(
            "{}; system packages: {}",
            plan.tags.join(", "),
            packages.join(" ")
        );
        Ok(Made::Built { id, note })
    })?;
    Ok(RuntimeImage {
        id,
        tags: plan.tags.clone(),
        cached: got == Got::Cached,
        key: Some(key),
    })
}

/// The content key of `plan`'s image on the base image `base_id`.
fn image_key(plan: &Plan, base_id: &str) -> String {
    let mut key = Key::new();
    key.set("tarball", plan.sha256)
        .set("base-image", base_id)
        .set("builder-image", plan.builder_image)
        .set("arch", plan.arch.name)
        .set_sha256("dockerfile", DOCKERFILE);
    if plan.runtime == Runtime::Distroless {
        key.set("runtime", "distroless").set_sha256(
            "distroless",
            format!("{DISTROLESS_DOCKERFILE}\0{DISTROLESS_ROOTFS}"),
        );
    }
    key.set_sha256("deps-script", DEPS_SCRIPT)
        .set_sha256("code", include_str!("image.rs"))
        .hex()
}

/// Writes the build context of `plan`'s image into `context`: the filled Dockerfile (whose
/// last step holds the labels, after everything the engine's cache can reuse), the tarball and,
/// for distroless, the script that fills its file system.
fn write_context(
    context: &Path,
    plan: &Plan,
    base_id: &str,
    key: &str,
    packages: &[String],
) -> Result<()> {
    let labels = labels(plan, base_id, key);
    let text = match plan.runtime {
        Runtime::Base => dockerfile(plan.base_image, packages, &labels),
        Runtime::Distroless => {
            let script = context.join("distroless-rootfs.sh");
            std::fs::write(&script, DISTROLESS_ROOTFS)
                .with_context(|| format!("cannot write {}", script.display()))?;
            fill(DISTROLESS_DOCKERFILE, plan.base_image, packages, &labels)
        }
    };
    let dockerfile = context.join("Dockerfile");
    std::fs::write(&dockerfile, text)
        .with_context(|| format!("cannot write {}", dockerfile.display()))?;
    let in_context = context.join(CONTEXT_TARBALL);
    if std::fs::hard_link(plan.tarball, &in_context).is_err() {
        std::fs::copy(plan.tarball, &in_context).with_context(|| {
            format!(
                "cannot copy {} into the build context",
                plan.tarball.display()
            )
        })?;
    }
    Ok(())
}

/// The platform to build `plan`'s image for when it is not the engine's own architecture
/// (`linux/arm64`), after checking the base image is of that architecture and that this machine
/// emulates it.
fn foreign_platform(sh: &Shell, engine: &Engine, plan: &Plan) -> Result<Option<&'static str>> {
    let target = plan.arch;
    if target.name == engine.arch(sh)? {
        return Ok(None);
    }
    let base_arch = engine.image_arch(sh, plan.base_image)?.unwrap_or_default();
    if crate::arch::parse(&base_arch).ok() != Some(target) {
        let command = crate::builder::base_image_command(plan.base_image).unwrap_or_else(|| {
            format!(
                "cargo xtask base-image --suite bookworm --slim --arch {}",
                target.deb
            )
        });
        bail!(
            "the runtime base image {} is {base_arch}, not {}; make a {} one with `{command} \
             --tag {}`",
            plan.base_image,
            target.deb,
            target.deb,
            plan.base_image
        );
    }
    crate::arch::ensure_emulation(target)?;
    Ok(Some(target.platform))
}

/// What failed when the build of `plan`'s image fails.
fn building(plan: &Plan) -> String {
    format!("building the runtime image {}", plan.tags.join(", "))
}

/// Where to look when the build of `plan`'s image failed.
fn build_hint(engine: &Engine, plan: &Plan, packages: &[String]) -> String {
    format!(
        "does the base image {} reach its package mirror and have the packages `{}`? try `{}`",
        plan.base_image,
        packages.join(" "),
        engine.shell_hint(plan.base_image),
    )
}

/// The Dockerfile of the runtime image.
pub fn dockerfile(base_image: &str, packages: &[String], labels: &[(String, String)]) -> String {
    fill(DOCKERFILE, base_image, packages, labels)
}

fn fill(
    template: &str,
    base_image: &str,
    packages: &[String],
    labels: &[(String, String)],
) -> String {
    template
        .replace("@BASE_IMAGE@", base_image)
        .replace("@PACKAGES@", &packages.join(" "))
        .replace("@LABELS@", &label_arguments(labels))
}

/// The arguments of one `LABEL` instruction: `"key"="value"` pairs, one per line. Inside the
/// quotes a backslash, a quote and a `$` (which the instruction would expand) are escaped.
fn label_arguments(labels: &[(String, String)]) -> String {
    let quote = |text: &str| -> String {
        let mut out = String::from('"');
        for c in text.chars() {
            match c {
                '\\' | '"' | '$' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' | '\r' => out.push(' '),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    };
    labels
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect::<Vec<_>>()
        .join(" \\\n      ")
}

/// The image's labels: OCI annotations and the project's own reverse-DNS keys.
fn labels(plan: &Plan, base_id: &str, key: &str) -> Vec<(String, String)> {
    let info = plan.info;
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    vec![
        pair("org.opencontainers.image.title", "python-fips"),
        pair(
            "org.opencontainers.image.description",
            &format!(
                "CPython {} at /opt/python-fips whose cryptography goes only through the OpenSSL \
                 {} FIPS provider",
                info.python, info.provider
            ),
        ),
        pair(LABEL_VERSION, &info.python),
        pair(
            "org.opencontainers.image.licenses",
            &info.licenses.join(" AND "),
        ),
        pair("org.opencontainers.image.base.name", plan.base_image),
        pair("org.python-fips.base.id", base_id),
        pair(LABEL_OPENSSL, &info.openssl),
        pair(LABEL_PROVIDER, &info.provider),
        pair(
            "org.python-fips.fips-provider.cmvp",
            info.cmvp.as_deref().unwrap_or("none"),
        ),
        pair(LABEL_TARBALL, plan.sha256),
        pair("org.python-fips.patched", &info.patched.to_string()),
        pair(
            LABEL_RUNTIME,
            match plan.runtime {
                Runtime::Base => "base",
                Runtime::Distroless => "distroless",
            },
        ),
        pair(LABEL_KEY, key),
    ]
}

/// The key of a package mapping: everything that decides it (the builder image it is read in,
/// the ldconfig tag, the sonames and the script).
fn mapping_key(plan: &Plan, needs: &BTreeMap<String, String>) -> String {
    let sonames: Vec<&str> = needs.keys().map(String::as_str).collect();
    Key::new()
        .set("builder-image", plan.builder_image)
        .set("ldconfig", plan.arch.ldconfig)
        .set("needs", sonames.join(" "))
        .set_sha256("deps-script", DEPS_SCRIPT)
        .hex()
}

/// `runtime_packages`, cached in `image-deps/<mapping key>.json`: a new tree that links the same
/// libraries (any patch change) maps them without a container of the builder image.
fn packages_for(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    plan: &Plan,
    needs: &BTreeMap<String, String>,
    key: &str,
    ui: &dyn Reporter,
) -> Result<Vec<String>> {
    let path = cache
        .dir("image-deps")
        .join(format!("{}.json", mapping_key(plan, needs)));
    if let Some(packages) = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Vec<String>>(&bytes).ok())
    {
        return Ok(packages);
    }
    let packages = runtime_packages(sh, engine, cache, plan, needs, key)?;
    if plan.store {
        // Without its entry the mapping is only made again next time.
        let stored = (|| -> Result<()> {
            let scratch = Scratch::new(cache, "image-deps")?;
            let file = scratch.join("packages.json");
            std::fs::write(&file, serde_json::to_vec(&packages)?)
                .with_context(|| format!("cannot write {}", file.display()))?;
            scratch.publish("packages.json", &path)
        })();
        if let Err(e) = stored {
            ui.message(&format!(
                "warning: cannot cache the image's package list: {e:#}"
            ));
        }
    }
    Ok(packages)
}

/// The system packages that install the libraries in `needs`, found in the builder image.
fn runtime_packages(
    sh: &Shell,
    engine: &Engine,
    cache: &Cache,
    plan: &Plan,
    needs: &BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<String>> {
    if needs.is_empty() {
        return Ok(Vec::new());
    }
    let host = Host::new(sh, engine, cache);
    let what = format!("deps-{}", &key[..12]);
    let log = host.log(&format!("image-{what}"));
    let mut command = vec![
        "sh".to_string(),
        "/runtime-deps.sh".to_string(),
        plan.arch.ldconfig.to_string(),
    ];
    command.extend(needs.keys().cloned());
    let spec = ContainerSpec {
        command,
        ..host.spec(&what, plan.builder_image)
    };
    // The mapping is part of the image's step: it is not shown as a step of its own.
    let step = Step {
        name: "image-deps",
        doing: "running",
        log: &log,
        exit_fails: true,
    };
    let put = |c: &Container| c.put_file("/", "runtime-deps.sh", DEPS_SCRIPT.as_bytes(), 0o644);
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    let on_line = |line: &str| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("package"), Some(soname), Some(package)) => {
                found.insert(soname.to_string(), package.to_string());
            }
            (Some("missing"), Some(soname), _) => missing.push(soname.to_string()),
            _ => {}
        }
    };
    let ok = host.run_step(&step, &spec, put, on_line, &Unshown)?.ok;
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|s| format!("{s} (needed by {})", needs[s]))
            .collect();
        bail!(
            "no package of the builder image provides {}; add the package with that library to \
             the recipe's [builder] list",
            list.join(", ")
        );
    }
    if !ok || found.len() != needs.len() {
        let what = "mapping the tree's libraries to packages in the builder image";
        return Err(log_failure(what, &log, 20, None));
    }
    Ok(found
        .into_values()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD_INFO: &str = r#"{
        "python": {"version": "3.13.15", "license": "PSF-2.0"},
        "openssl": {"version": "3.5.7", "license": "Apache-2.0"},
        "fips_provider": {"source": {"version": "3.0.20", "license": "Apache-2.0"},
                          "cmvp": "not a validated module"},
        "patches": [],
        "builder_image": {"base": "debian:bookworm", "id": "sha256:abc"}
    }"#;

    #[test]
    fn build_info_gives_versions_licenses_and_the_control_tags() {
        let info = TreeInfo::parse(BUILD_INFO).unwrap();
        assert_eq!(info.python, "3.13.15");
        assert_eq!(info.openssl, "3.5.7");
        assert_eq!(info.provider, "3.0.20");
        assert_eq!(info.cmvp, None);
        assert_eq!(info.licenses, ["PSF-2.0", "Apache-2.0"]);
        assert!(!info.patched);
        assert_eq!(
            info.default_tags(Runtime::Base),
            [
                "python-fips:3.13.15-unpatched",
                "python-fips:3.13-unpatched"
            ]
        );
        let patched = BUILD_INFO.replace(
            r#""patches": []"#,
            r#""patches": [{"file": "3.13/fips.patch"}]"#,
        );
        let info = TreeInfo::parse(&patched).unwrap();
        assert_eq!(
            info.default_tags(Runtime::Base),
            ["python-fips:3.13.15", "python-fips:3.13"]
        );
    }

    /// E12: a BUILD-INFO.json past the cap (a small tarball inflates to gigabytes of one) is
    /// refused with its name, not read whole; one under it is read as before.
    #[test]
    fn an_oversized_build_info_is_refused_not_read_whole() {
        let dir = crate::testutil::TempDir::new("build-info-cap");
        let tarball = |name: &str, text: &[u8]| {
            let path = dir.path().join(name);
            let gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&path).unwrap(),
                flate2::Compression::fast(),
            );
            let mut tar = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, "opt/python-fips/BUILD-INFO.json", text)
                .unwrap();
            tar.into_inner().unwrap().finish().unwrap();
            path
        };
        let fine = tarball("fine.tar.gz", BUILD_INFO.as_bytes());
        assert_eq!(TreeInfo::read(&fine).unwrap().python, "3.13.15");
        // Valid JSON all the same: the object, then whitespace.
        let mut padded = BUILD_INFO.as_bytes().to_vec();
        padded.resize(2 << 20, b' ');
        let padded = tarball("padded.tar.gz", &padded);
        let err = format!("{:#}", TreeInfo::read(&padded).unwrap_err());
        assert!(err.contains("BUILD-INFO.json"), "{err}");
        assert!(err.contains("padded.tar.gz"), "{err}");
        assert!(err.contains("more than 1 MiB"), "{err}");
    }

    /// A fake engine CLI whose build fails: the error carries the end of the log and a hint.
    #[test]
    fn a_failed_image_build_shows_its_log_and_a_hint() {
        let dir = crate::testutil::TempDir::new("fake-docker-build");
        let engine = Engine::fake(
            dir.path(),
            "echo 'Step 2/9 : RUN apt-get install libffi8'\n\
             echo 'E: Unable to locate package libffi8' >&2\nexit 100\n",
        );
        let log = dir.path().join("image.log");
        let mut seen = Vec::new();
        let ok = engine
            .build_for(None, dir.path(), &["t:1".into()], &[], &log, |l| {
                seen.push(l.to_string())
            })
            .unwrap();
        assert!(!ok);
        assert_eq!(seen, ["Step 2/9 : RUN apt-get install libffi8"]);
        let info = TreeInfo::parse(BUILD_INFO).unwrap();
        let plan = Plan {
            tarball: Path::new("/dist/t.tar.gz"),
            sha256: "ab",
            info: &info,
            base_image: "debian:bookworm",
            builder_image: "sha256:abc",
            arch: crate::arch::parse("x86_64").unwrap(),
            tags: vec!["t:1".into()],
            runtime: Runtime::Base,
            store: false,
        };
        let hint = build_hint(&engine, &plan, &["libffi8".into()]);
        let err = log_failure(&building(&plan), &log, 30, Some(&hint)).to_string();
        assert!(
            err.contains("building the runtime image t:1 failed"),
            "{err}"
        );
        assert!(err.contains("Unable to locate package libffi8"), "{err}");
        assert!(err.contains(&engine.shell_hint("debian:bookworm")), "{err}");
    }

    /// A fake engine CLI whose containers map two sonames: the mapping is made once, then read
    /// from its cache entry; a run that may not write leaves none.
    #[test]
    fn the_package_mapping_is_made_once_per_builder_and_sonames() {
        let dir = crate::testutil::TempDir::new("fake-docker-deps");
        let calls = dir.path().join("calls");
        let engine = Engine::fake(
            dir.path(),
            &format!(
                "echo \"$1\" >> '{}'
case \"$1\" in
                 start) echo 'package libz.so.1 zlib1g'; echo 'package libffi.so.8 libffi8' ;;
                 cp) cat > /dev/null ;;
esac
exit 0
",
                calls.display()
            ),
        );
        let sh = Shell::new().unwrap();
        let cache = Cache::open(Some(&dir.path().join("cache"))).unwrap();
        let info = TreeInfo::parse(BUILD_INFO).unwrap();
        let mut plan = Plan {
            tarball: Path::new("/dist/t.tar.gz"),
            sha256: "ab",
            info: &info,
            base_image: "debian:bookworm",
            builder_image: "sha256:abc",
            arch: crate::arch::parse("x86_64").unwrap(),
            tags: vec!["t:1".into()],
            runtime: Runtime::Base,
            store: false,
        };
        let needs: BTreeMap<String, String> = [("libz.so.1", "bin/x"), ("libffi.so.8", "lib/y")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let ui = crate::progress::Silent;
        let starts = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .filter(|l| *l == "start")
                .count()
        };
        let want = ["libffi8", "zlib1g"];
        assert_eq!(
            packages_for(&sh, &engine, &cache, &plan, &needs, &"k".repeat(64), &ui).unwrap(),
            want
        );
        assert!(!cache.dir("image-deps").exists(), "written under --offline");
        plan.store = true;
        for _ in 0..2 {
            assert_eq!(
                packages_for(&sh, &engine, &cache, &plan, &needs, &"k".repeat(64), &ui).unwrap(),
                want
            );
        }
        assert_eq!(starts(), 2, "the mapping ran again although cached");
        // Another builder image maps again.
        plan.builder_image = "sha256:def";
        packages_for(&sh, &engine, &cache, &plan, &needs, &"k".repeat(64), &ui).unwrap();
        assert_eq!(starts(), 3);
        assert_eq!(
            std::fs::read_dir(cache.dir("image-deps")).unwrap().count(),
            2
        );
    }

    #[test]
    fn plain_tags_always_name_the_engines_own_architecture() {
        let plain = || vec!["python-fips:3.13.15".to_string(), "python-fips:3.13".into()];
        assert_eq!(arch_tags(plain(), "x86_64", false, false), plain());
        assert_eq!(
            arch_tags(plain(), "aarch64", true, true),
            ["python-fips:3.13.15-aarch64", "python-fips:3.13-aarch64"]
        );
        assert_eq!(
            arch_tags(plain(), "x86_64", true, false),
            [
                "python-fips:3.13.15",
                "python-fips:3.13",
                "python-fips:3.13.15-x86_64",
                "python-fips:3.13-x86_64"
            ]
        );
    }

    fn some_labels() -> Vec<(String, String)> {
        vec![
            (
                "org.opencontainers.image.title".into(),
                "python-fips".into(),
            ),
            (
                "org.opencontainers.image.description".into(),
                "CPython \"3.13\" at $HOME\\x".into(),
            ),
            (LABEL_KEY.into(), "k1".into()),
        ]
    }

    /// The instructions of a Dockerfile (continuation lines joined), without comments.
    fn instructions(text: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut open = false;
        for line in text.lines() {
            if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let body = line.strip_suffix('\\');
            match open {
                true => out.last_mut().unwrap().push_str(body.unwrap_or(line)),
                false => out.push(body.unwrap_or(line).to_string()),
            }
            open = body.is_some();
        }
        out
    }

    #[test]
    fn dockerfile_is_filled_completely() {
        let text = dockerfile(
            "debian:bookworm",
            &["libffi8".into(), "libsqlite3-0".into()],
            &some_labels(),
        );
        assert!(text.contains("FROM debian:bookworm\n"));
        assert!(text.contains("packages='libffi8 libsqlite3-0'"));
        // The CA bundle comes without Debian's openssl, which ca-certificates depends on.
        assert!(text.contains("apt-get download ca-certificates"));
        assert!(!text.contains('@'), "a placeholder is left:\n{text}");
        assert!(!text.contains("LD_LIBRARY_PATH="));
        assert!(text.contains("\nUSER python\n"));
        // Quotes, backslashes and `$` in a value stay literal.
        assert!(
            text.contains(
                r#""org.opencontainers.image.description"="CPython \"3.13\" at \$HOME\\x""#
            ),
            "{text}"
        );
    }

    /// What depends only on the base image and the package list comes first, so the layer cache
    /// reuses it when only the tree changes; after the tree, the fewest steps, one LABEL last.
    #[test]
    fn dockerfile_puts_what_the_tree_changes_last_in_few_steps() {
        let text = dockerfile("debian:bookworm", &["libffi8".into()], &some_labels());
        let steps = instructions(&text);
        let verbs: Vec<&str> = steps
            .iter()
            .map(|s| s.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(
            verbs,
            [
                "FROM", "RUN", "ENV", "WORKDIR", "CMD", "ADD", "RUN", "USER", "LABEL"
            ],
            "{text}"
        );
        assert!(steps[1].contains("apt-get install") && steps[1].contains("useradd"));
        assert!(steps[5].starts_with("ADD python-fips.tar.gz /"));
        assert_eq!(steps[6], "RUN /opt/python-fips/bin/python-fips-setup");
        // Nothing before the ADD changes with the tree: not its labels, not its key.
        assert!(!steps[..5].iter().any(|s| s.contains("k1")));
        assert!(
            steps[8].contains(&format!("\"{LABEL_KEY}\"=\"k1\"")),
            "{text}"
        );
    }

    #[test]
    fn distroless_dockerfile_builds_from_scratch_after_the_self_test() {
        let text = fill(
            DISTROLESS_DOCKERFILE,
            "debian:bookworm",
            &["libffi8".into()],
            &some_labels(),
        );
        assert!(text.starts_with("# "), "{text}");
        assert!(text.contains("FROM debian:bookworm AS tree\n"));
        assert!(!text.contains('@'), "a placeholder is left:\n{text}");
        let setup = text
            .find("RUN /opt/python-fips/bin/python-fips-setup")
            .unwrap();
        let rootfs = text.find("RUN sh /distroless-rootfs.sh /rootfs").unwrap();
        let scratch = text.find("FROM scratch\n").unwrap();
        assert!(setup < rootfs && rootfs < scratch, "{text}");
        // After FROM scratch nothing runs: there is no shell to run it.
        assert!(!text[scratch..].contains("RUN "), "{text}");
        assert!(text[scratch..].contains("\nUSER python\n"));
        let steps = instructions(&text);
        assert!(steps.last().unwrap().starts_with("LABEL "), "{text}");
        assert_eq!(steps.iter().filter(|s| s.starts_with("LABEL ")).count(), 1);
        // The first stage is the base image's build up to the self-test, step for step, so the
        // layer cache shares it.
        let base = dockerfile("debian:bookworm", &["libffi8".into()], &some_labels());
        let shared = |t: &str| -> Vec<String> {
            let steps = instructions(t);
            let end = steps
                .iter()
                .position(|s| s.contains("python-fips-setup"))
                .unwrap();
            steps[1..=end].to_vec()
        };
        assert_eq!(shared(&text), shared(&base));
    }
}
