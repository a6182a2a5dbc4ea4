//! `wheels`: builds the wheels an application installs from source, against the tree's OpenSSL.
//!
//! The build is one cached stage, run with the tree's own interpreter (the `finalize` output,
//! which still holds the headers) in a toolchain image: the builder image plus the recipe's
//! `[wheels]` packages (a Rust toolchain for cryptography), made the way `ensure_image` makes
//! every helper image, so the builder image and the keys of the build stages do not change.
//! Its key is the requirements, the interpreter's stage key and the toolchain image. The wheels
//! land in `dist/wheels/<python>-<arch>/` with `lock.json` and a CycloneDX SBOM, and the audit
//! must find nothing in them; `--image` installs them into the runtime image and verifies it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::build::{Build, Stages};
use crate::catalog::BuilderSpec;
use crate::config::BuildConfig;
use crate::digest::{Key, hex, sha256_file};
use crate::pipeline::{Done, Input, StageSpec, unix_now};
use crate::progress::{Reporter, StepEvent, Terminal};
use crate::tarwalk::{self, Compression};
use crate::{audit, builder, cache, flags, image, verify};

const SCRIPT: &str = include_str!("wheels/wheels.sh");
const BUILD_PY: &str = include_str!("wheels/wheels.py");
const DOCKERFILE: &str = include_str!("wheels/Dockerfile.in");
/// Label of an image with wheels installed: the content key it was built from.
pub const LABEL_WHEELS_KEY: &str = "org.python-fips.wheels.key";

/// What to build and where pip finds it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Requirement lines, as pip reads them.
    pub requirements: String,
    pub index_url: Option<String>,
    pub no_index: bool,
    /// A CA bundle for TLS from the build container.
    pub cert: Option<PathBuf>,
    /// URLs of `--find-links` (directories are in `find_link_dirs`).
    pub find_link_urls: Vec<String>,
    pub find_link_dirs: Vec<PathBuf>,
}

/// One wheel of the result, as `lock.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Locked {
    pub name: String,
    pub version: String,
    /// The file pip downloaded (an sdist, or a wheel kept as it came).
    pub file: String,
    /// Its sha256, as pip recorded it and then checked it.
    pub sha256: String,
    pub wheel: String,
    /// Built from source here, or downloaded as a wheel.
    pub built: bool,
}

/// The wheels of one build.
#[derive(Debug)]
pub struct Built {
    pub dir: PathBuf,
    pub wheels: Vec<(Locked, String, u64)>,
    pub stage: Done,
}

impl flags::Wheels {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let ui = Terminal::new();
        let request = self.request()?;
        let build = Build::start(sh, &BuildConfig::from_args(&self.build)?, &ui)?;
        if build.cross.is_some() {
            // The wheels stage runs the recipe's interpreter in the builder, which a cross-built
            // tree cannot do.
            bail!(
                "wheels are built for the engine's own architecture ({}) only, not with --arch {}\nhint: run `wheels` on an engine of that architecture",
                build.build_arch,
                build.arch
            );
        }
        let done = build.run_all(&ui)?;
        let built = build.wheels(&done, &request, &ui)?;
        ui.message(&format!(
            "{:<14} {} (key {})",
            "wheels",
            match built.stage.cached {
                true => "cached".to_string(),
                false => format!("built in {:.1} s", built.stage.seconds),
            },
            &built.stage.key[..16]
        ));
        for (locked, sha256, size) in &built.wheels {
            let how = if locked.built { "built" } else { "kept " };
            ui.message(&format!(
                "{how} {} ({size} bytes, sha256 {sha256})",
                locked.wheel
            ));
        }
        let audit = audit::audit_path(&built.dir)?;
        for line in audit::render(&audit).lines() {
            ui.message(line);
        }
        audit.ensure_clean()?;
        if self.image {
            let artifact = build.package(&done, &ui)?;
            let runtime =
                image::runtime_image(&image::ImageInputs::of(&build), &artifact, &[], &ui)?;
            let info = image::TreeInfo::read(&artifact.tarball)?;
            let tags = match self.tag.is_empty() {
                true => vec![format!("python-fips:{}-wheels", info.python)],
                false => self.tag.clone(),
            };
            let id = install(&build, &runtime.id, &built, &tags, &ui)?;
            let mut verdict = verify::check(sh, &build.engine, &build.ctx.cache, &id, &ui)?;
            verdict.image = tags[0].clone();
            for line in verify::render(&verdict.checks).lines() {
                ui.message(line);
            }
            let json = built.dir.join("verify.json");
            verdict.write(&json)?;
            verdict.ensure_passed(Some(&json))?;
            let mut audit = audit::audit_image(sh, &build.engine, &build.ctx.cache, &id)?;
            audit.target = tags[0].clone();
            for line in audit::render(&audit).lines() {
                ui.message(line);
            }
            audit.ensure_clean()?;
            for tag in &tags {
                println!("{tag}");
            }
        }
        println!("{}", built.dir.display());
        Ok(())
    }

    /// The requirement lines of the command line and the `-r` files, and where pip looks.
    fn request(&self) -> Result<Request> {
        let mut requirements = String::new();
        for r in &self.requirements {
            requirements.push_str(r.trim());
            requirements.push('\n');
        }
        for file in &self.requirement_files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the requirements file {}", file.display()))?;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.starts_with('-') {
                    bail!(
                        "{}: the option line `{line}` is not supported in a requirements file \
                         here; pass --index-url or --find-links on the command line",
                        file.display()
                    );
                }
                if !line.is_empty() {
                    requirements.push_str(line);
                    requirements.push('\n');
                }
            }
        }
        if self.no_index && self.find_links.is_empty() {
            bail!("--no-index needs --find-links DIR (or URL) holding the sdists and wheels");
        }
        if requirements.is_empty() {
            bail!("no requirements; name packages (`cryptography`) or pass -r requirements.txt");
        }
        let (mut urls, mut dirs) = (Vec::new(), Vec::new());
        for link in &self.find_links {
            let path = Path::new(link);
            if link.contains("://") {
                urls.push(link.clone());
            } else if path.is_dir() {
                dirs.push(std::path::absolute(path)?);
            } else {
                bail!("--find-links {link} is neither a URL nor a directory");
            }
        }
        Ok(Request {
            requirements,
            index_url: self.index_url.clone(),
            no_index: self.no_index,
            cert: self.cert.clone(),
            find_link_urls: urls,
            find_link_dirs: dirs,
        })
    }
}

impl Build<'_> {
    /// Builds (or finds cached) the wheels of `request` with the interpreter of `done` and
    /// copies them to `<out>/wheels/<python>-<arch>/`.
    pub fn wheels(&self, done: &Stages, request: &Request, ui: &dyn Reporter) -> Result<Built> {
        let finalize = done.of(crate::graph::Stage::Finalize)?.clone();
        let r = &self.ctx.recipe;
        if r.wheels.apt.is_empty() && r.wheels.dnf.is_empty() {
            bail!(
                "the recipe of CPython {} has no [wheels] section naming the toolchain to build \
                 wheels with; add one like the other recipes' (rustc-web, cargo-web)",
                r.minor
            );
        }
        let spec = BuilderSpec {
            base_image: self.image_id.clone(),
            apt: r.wheels.apt.clone(),
            dnf: r.wheels.dnf.clone(),
        };
        let images = builder::Images {
            sh: self.sh,
            engine: &self.engine,
            cache: &self.ctx.cache,
            shared: &[],
        };
        let toolchain = images.ensure_image(&spec, "wheels", ui)?;
        // The wheels stage's keys name a toolchain image no other machine has: nothing to share.
        let mut b = self.runner();
        b.image_id = toolchain;
        b.remotes = &[];

        let scratch = self.ctx.cache.scratch("wheels-request")?;
        let requirements = scratch.join("requirements.in");
        std::fs::write(&requirements, &request.requirements)
            .with_context(|| format!("cannot write {}", requirements.display()))?;
        let mut inputs = vec![Input {
            dest: "requirements.in".into(),
            host: requirements,
            content: hex(&Sha256::digest(&request.requirements)),
        }];
        for (n, dir) in request.find_link_dirs.iter().enumerate() {
            inputs.push(Input {
                dest: format!("find-links/{n}"),
                host: dir.clone(),
                content: dir_key(dir)?,
            });
        }
        let mut env = Vec::new();
        if let Some(cert) = &request.cert {
            let text = std::fs::read(cert).with_context(|| {
                format!("cannot read the CA bundle {} (--cert)", cert.display())
            })?;
            inputs.push(Input {
                dest: "cert.pem".into(),
                host: cert.clone(),
                content: hex(&Sha256::digest(&text)),
            });
            for var in ["PIP_CERT", "CARGO_HTTP_CAINFO", "SSL_CERT_FILE"] {
                env.push((var.to_string(), "/build/cert.pem".to_string()));
            }
        }
        if let Some(url) = &request.index_url {
            env.push(("PIP_INDEX_URL".to_string(), url.clone()));
        }
        if request.no_index {
            env.push(("PIP_NO_INDEX".to_string(), "1".to_string()));
        }
        if !request.find_link_urls.is_empty() {
            env.push((
                "PIP_FIND_LINKS".to_string(),
                request.find_link_urls.join(" "),
            ));
        }
        let stage = StageSpec {
            name: "wheels",
            script: SCRIPT,
            files: vec![("wheels.py", BUILD_PY)],
            env,
            inputs,
            deps: vec![finalize],
            output: "/out",
            source_date_epoch: Some(self.tree.source_date_epoch),
            reuse: false,
        };
        let key = stage.key(&b);
        let ran = b.run(&stage, ui);
        cache::remove(&scratch)?;
        let stage_done = match ran {
            Ok(done) => done,
            Err(err) => return Err(explain(err, &self.ctx.cache, &key, request)),
        };

        let dir = self
            .out_dir()
            .join("wheels")
            .join(format!("{}-{}", r.python.version, self.arch));
        unpack(&stage_done.output, &dir)?;
        let lock: Vec<Locked> =
            serde_json::from_slice(&std::fs::read(dir.join("lock.json")).with_context(|| {
                format!("the wheels stage wrote no lock.json in {}", dir.display())
            })?)?;
        let mut wheels = Vec::new();
        for locked in lock {
            let path = dir.join(&locked.wheel);
            let sha256 = sha256_file(&path)?;
            let size = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            wheels.push((locked, sha256, size));
        }
        let sbom = sbom(&wheels, &stage_done, &r.python.version, &self.arch);
        cache::write_atomic(
            &dir.join("wheels.cdx.json"),
            &serde_json::to_vec_pretty(&sbom)?,
        )?;
        Ok(Built {
            dir,
            wheels,
            stage: stage_done,
        })
    }
}

/// A content key of a `--find-links` directory: its file names and their sha256.
fn dir_key(dir: &Path) -> Result<String> {
    let mut key = Key::new();
    let list = || format!("cannot list {}", dir.display());
    for entry in std::fs::read_dir(dir).with_context(list)? {
        let path = entry.with_context(list)?.path();
        if path.is_file() {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            key.set(name.into_owned(), sha256_file(&path)?);
        }
    }
    Ok(key.hex())
}

/// Replaces the wheels in `dir` with those of the stage output (`out/wheels/*`, `out/lock.json`).
fn unpack(output: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let list = || format!("cannot list {}", dir.display());
    for entry in std::fs::read_dir(dir).with_context(list)? {
        let path = entry.with_context(list)?.path();
        if path.extension().is_some_and(|e| e == "whl") {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    tarwalk::for_each_entry(output, Compression::None, |path, entry| {
        if !entry.header().entry_type().is_file() {
            return Ok(None::<()>);
        }
        let Some(name) = Path::new(path).file_name() else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        cache::write_atomic(&dir.join(name), &bytes)?;
        Ok(None)
    })?;
    Ok(())
}

/// Turns a failed wheels stage into an error that says what went wrong: no index, an unknown
/// package, or a package whose build failed (the stage's own error keeps the log's end).
fn explain(
    err: anyhow::Error,
    cache: &cache::Cache,
    key: &str,
    request: &Request,
) -> anyhow::Error {
    let Some(log) = newest_log(cache, key) else {
        return err;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let index = request
        .index_url
        .as_deref()
        .unwrap_or("pip's default index");
    const UNREACHABLE: [&str; 7] = [
        "NewConnectionError",
        "Network is unreachable",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Connection refused",
        "ConnectTimeoutError",
        "No route to host",
    ];
    if text.contains("CERTIFICATE_VERIFY_FAILED") {
        return err.context(format!(
            "cannot verify the TLS certificate of the package index ({index}) from the build \
             container; if this network's proxy signs with its own CA, pass --cert FILE with the \
             CA bundle that holds it (pip's option; it defaults to $PIP_CERT)"
        ));
    }
    if UNREACHABLE.iter().any(|m| text.contains(m)) {
        return err.context(format!(
            "cannot reach the package index ({index}) from the build container: the wheels stage \
             downloads the sources and their build dependencies from it. Without network, pass \
             --find-links DIR with every sdist and wheel needed (fill it where the index is \
             reachable with `pip download --no-binary <packages> <requirements> -d DIR`), or \
             --index-url of a reachable mirror"
        ));
    }
    if let Some(name) = text
        .lines()
        .find_map(|l| l.split("No matching distribution found for ").nth(1))
    {
        return err.context(format!(
            "the package index ({index}) has no distribution of `{}`: is the name (and the \
             version) right?",
            name.trim()
        ));
    }
    if let Some(what) = text
        .lines()
        .find_map(|l| l.strip_prefix("python-fips-wheels: FAILED building "))
    {
        return err.context(format!(
            "cannot build the wheel of {}; the end of the build's log follows",
            what.trim()
        ));
    }
    err
}

/// The newest log of the wheels stage with `key`.
fn newest_log(cache: &cache::Cache, key: &str) -> Option<PathBuf> {
    let prefix = format!("wheels-{}-", &key[..12]);
    std::fs::read_dir(cache.dir("logs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .max()
}

/// A CycloneDX 1.5 document listing the wheels with their sha256 and where each came from.
fn sbom(
    wheels: &[(Locked, String, u64)],
    stage: &Done,
    python: &str,
    arch: &str,
) -> serde_json::Value {
    let components: Vec<serde_json::Value> = wheels
        .iter()
        .map(|(l, sha256, _)| {
            let prop = |name: &str, value: &str| serde_json::json!({"name": name, "value": value});
            serde_json::json!({
                "type": "library",
                "name": l.name,
                "version": l.version,
                "purl": format!("pkg:pypi/{}@{}", l.name, l.version),
                "hashes": [{"alg": "SHA-256", "content": sha256}],
                "properties": [
                    prop("python-fips:wheel", &l.wheel),
                    prop("python-fips:built-from-source", &l.built.to_string()),
                    prop("python-fips:source-file", &l.file),
                    prop("python-fips:source-sha256", &l.sha256),
                ],
            })
        })
        .collect();
    let digest = hex(&Sha256::digest(
        serde_json::to_vec(&components).unwrap_or_default(),
    ));
    serde_json::json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        // A UUID made from the content, so the same wheels give the same document.
        "serialNumber": format!(
            "urn:uuid:{}-{}-5{}-8{}-{}",
            &digest[..8], &digest[8..12], &digest[13..16], &digest[17..20], &digest[20..32]
        ),
        "version": 1,
        "metadata": {
            "component": {
                "type": "application",
                "name": format!("python-fips-{python}-wheels-linux-{arch}"),
            },
            "properties": [
                {"name": "python-fips:wheels-stage-key", "value": stage.key},
            ],
        },
        "components": components,
    })
}

/// The runtime image `runtime` with `built`'s wheels installed, tagged `tags`; found again by
/// its content key when it exists.
fn install(
    build: &Build,
    runtime: &str,
    built: &Built,
    tags: &[String],
    ui: &dyn Reporter,
) -> Result<String> {
    let (sh, engine, cache) = (build.sh, &build.engine, &build.ctx.cache);
    let mut key = Key::new();
    key.set("runtime-image", runtime)
        .set_sha256("dockerfile", DOCKERFILE);
    for (l, sha256, _) in &built.wheels {
        key.set(format!("wheel:{}", l.wheel), sha256.clone());
    }
    let key = key.hex();
    if let Some(id) = engine
        .images_with_label(sh, LABEL_WHEELS_KEY, &key)?
        .into_iter()
        .next()
    {
        for tag in tags {
            engine.tag(sh, &id, tag)?;
        }
        ui.step(
            "wheels image",
            StepEvent::Skipped {
                what: &format!("cached ({})", tags.join(", ")),
            },
        );
        return Ok(id);
    }
    let started = Instant::now();
    let context = cache.scratch("wheels-image")?;
    let result = (|| -> Result<String> {
        let dockerfile = context.join("Dockerfile");
        std::fs::write(&dockerfile, DOCKERFILE.replace("@RUNTIME_IMAGE@", runtime))
            .with_context(|| format!("cannot write {}", dockerfile.display()))?;
        let wheels = context.join("wheels");
        std::fs::create_dir(&wheels)
            .with_context(|| format!("cannot create {}", wheels.display()))?;
        for (l, ..) in &built.wheels {
            let (from, to) = (built.dir.join(&l.wheel), wheels.join(&l.wheel));
            std::fs::copy(&from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        }
        let log = cache
            .dir("logs")
            .join(format!("wheels-image-{}-{}.log", &key[..12], unix_now()));
        let names: Vec<&str> = built
            .wheels
            .iter()
            .map(|(l, ..)| l.wheel.as_str())
            .collect();
        // The runtime image's own key and tarball labels would make this image pass for it.
        let labels = vec![
            (LABEL_WHEELS_KEY.to_string(), key.clone()),
            (image::LABEL_KEY.to_string(), format!("wheels:{key}")),
            (image::LABEL_TARBALL.to_string(), String::new()),
            ("org.python-fips.wheels".to_string(), names.join(" ")),
        ];
        let ok = engine.build_for(None, &context, tags, &labels, &log, |_| {})?;
        if !ok {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "cannot install the wheels into the runtime image; the last 30 lines of its \
                 log:\n{}\n\nfull log: {}",
                crate::engine::last_lines(&text, 30),
                log.display()
            );
        }
        engine
            .image_id(sh, &tags[0])?
            .with_context(|| format!("{} is missing right after it was built", tags[0]))
    })();
    cache::remove(&context)?;
    let id = result?;
    ui.step(
        "wheels image",
        StepEvent::Ran {
            seconds: started.elapsed().as_secs_f64(),
            note: Some(&tags.join(", ")),
        },
    );
    Ok(id)
}
