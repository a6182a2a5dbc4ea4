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

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::build::{Build, Stages};
use crate::config::BuildConfig;
use crate::digest::{Key, hex, sha256_file};
use crate::host::{ContextBuild, KeyedImage, Made, Scratch, Unshown, unix_now};
use crate::pipeline::{Done, Input, Runner, StageSpec};
use crate::progress::{Reporter, Terminal};
use crate::tarwalk::{self, Compression};
use crate::{audit, cache, flags, image, verify};

const SCRIPT: &str = include_str!("wheels/wheels.sh");
const BUILD_PY: &str = include_str!("wheels/wheels.py");
const DOCKERFILE: &str = include_str!("wheels/Dockerfile.in");
const LIBPQ_SCRIPT: &str = include_str!("wheels/libpq.sh");
/// The version of the lock file's format that `wheels.py` writes and this reads.
const LOCK_FORMAT: u32 = 1;
/// Packages that link libpq: a lock that names one gets the `libpq` stage.
const LIBPQ_USERS: [&str; 2] = ["psycopg2", "psycopg-c"];
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
    /// The lock file: read when it exists, written when it does not or on `upgrade`.
    pub lock: PathBuf,
    /// Resolve again and rewrite the lock even when it exists.
    pub upgrade: bool,
    /// Stop once the lock is written (or found): build nothing.
    pub lock_only: bool,
}

impl Request {
    /// Whether a requirement line names a package that links libpq.
    fn names_libpq_user(&self) -> bool {
        self.requirements.lines().any(|line| {
            let name: String = line
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .map(|c| match c {
                    '_' | '.' => '-',
                    c => c.to_ascii_lowercase(),
                })
                .collect();
            LIBPQ_USERS.contains(&name.as_str())
        })
    }
}

/// A lock file (`wheels.lock`): the requirements it was made for and every file it pins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lock {
    #[serde(rename = "python-fips-wheels-lock")]
    pub format: u32,
    /// The interpreter it was resolved with (`3.13.15`): kept wheels are built for its minor.
    pub python: String,
    pub arch: String,
    pub requirements: Vec<String>,
    pub packages: Vec<LockedFile>,
}

/// One pinned file of a lock: a sdist to build, or a wheel to keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockedFile {
    pub name: String,
    pub version: String,
    pub file: String,
    pub sha256: String,
    /// Built from this sdist here (or kept as the wheel it is).
    pub build: bool,
    /// The wheels its build runs with, pinned the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub build_requires: Vec<LockedFile>,
}

impl Lock {
    /// The lock at `path`, or `None` when there is no file there.
    fn read(path: &Path) -> Result<Option<Lock>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let lock: Lock = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a wheels lock; remove it (or pass --upgrade) to lock again",
                path.display()
            )
        })?;
        if lock.format != LOCK_FORMAT {
            bail!(
                "{} is a lock of format {}, and this version reads format {LOCK_FORMAT}; pass \
                 --upgrade to lock again",
                path.display(),
                lock.format
            );
        }
        Ok(Some(lock))
    }

    /// Refuses a lock made for other requirements, another CPython minor or architecture.
    fn check(&self, request: &Request, python: &str, arch: &str) -> Result<()> {
        let asked: Vec<&str> = request.requirements.lines().collect();
        let path = request.lock.display();
        if asked != self.requirements {
            bail!(
                "{path} locks `{}`, not `{}`; pass --upgrade to lock these requirements, or \
                 --lock FILE to keep this lock and use another",
                self.requirements.join(" "),
                asked.join(" ")
            );
        }
        if crate::catalog::minor_of(&self.python) != crate::catalog::minor_of(python)
            || self.arch != arch
        {
            bail!(
                "{path} was locked for CPython {} on {}, not {python} on {arch}: its wheels do \
                 not fit; pass --upgrade to lock for this build, or --lock FILE for another lock",
                self.python,
                self.arch
            );
        }
        Ok(())
    }

    fn links_libpq(&self) -> bool {
        self.packages
            .iter()
            .any(|p| p.build && LIBPQ_USERS.contains(&p.name.as_str()))
    }
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
        if build.facts().cross() {
            // The wheels stage runs the recipe's interpreter in the builder, which a cross-built
            // tree cannot do.
            bail!(
                "wheels are built for the engine's own architecture ({}) only, not with --arch {}\nhint: run `wheels` on an engine of that architecture",
                build.facts().build_arch.name,
                build.facts().arch.name
            );
        }
        let done = build.run_all(&ui)?;
        let Some(built) = build.wheels(&done, &request, &ui)? else {
            crate::progress::answer!("{}", request.lock.display());
            return Ok(());
        };
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
            let artifact = crate::ship::package(&build, &done, &ui)?;
            let runtime =
                image::runtime_image(&image::ImageInputs::of(&build), &artifact, &[], &ui)?;
            let info = image::TreeInfo::read(&artifact.tarball)?;
            let tags = match self.tag.is_empty() {
                true => vec![format!("python-fips:{}-wheels", info.python)],
                false => self.tag.clone(),
            };
            let id = install(&build, &runtime.id, &built, &tags, &ui)?;
            let probes = verify::Probes {
                postgres: self.postgres.clone(),
            };
            let mut verdict =
                verify::check_with(sh, build.engine(), build.cache(), &id, &probes, &ui)?;
            verdict.image = tags[0].clone();
            for line in verify::render(&verdict.checks).lines() {
                ui.message(line);
            }
            let json = built.dir.join("verify.json");
            verdict.write(&json)?;
            verdict.ensure_passed(Some(&json))?;
            let mut audit = audit::audit_image(sh, build.engine(), build.cache(), &id)?;
            audit.target = tags[0].clone();
            for line in audit::render(&audit).lines() {
                ui.message(line);
            }
            audit.ensure_clean()?;
            for tag in &tags {
                crate::progress::answer!("{tag}");
            }
        }
        crate::progress::answer!("{}", built.dir.display());
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
            lock: std::path::absolute(&self.lock)?,
            upgrade: self.upgrade,
            lock_only: self.lock_only,
        })
    }
}

impl Build<'_> {
    /// Builds (or finds cached) the wheels `request`'s lock names with the interpreter of `done`
    /// (locking the requirements first when there is no lock, or on `--upgrade`) and copies them
    /// to `<out>/wheels/<python>-<arch>/`; with `lock_only`, stops at the lock.
    pub fn wheels(
        &self,
        done: &Stages,
        request: &Request,
        ui: &dyn Reporter,
    ) -> Result<Option<Built>> {
        let finalize = done.of(crate::graph::Stage::Finalize)?.clone();
        let b = self.toolchain_runner(ui)?;
        let (lock, libpq) = self.lock_for(&b, &finalize, request, ui)?;
        if request.lock_only {
            return Ok(None);
        }
        let mut deps = vec![finalize.clone()];
        if lock.links_libpq() {
            deps.push(match libpq {
                Some(done) => done,
                None => self.libpq(&b, &finalize, ui)?,
            });
        }
        let stage_done = self.run_wheels_stage(&b, deps, request, &lock, ui)?;
        self.collect(stage_done).map(Some)
    }

    /// The runner of the wheels stages: the build's, in the toolchain image (the builder image
    /// plus the recipe's `[wheels]` packages), sharing nothing.
    fn toolchain_runner(&self, ui: &dyn Reporter) -> Result<Runner<'_>> {
        let r = self.recipe();
        if r.wheels.apt.is_empty() && r.wheels.dnf.is_empty() {
            bail!(
                "the recipe of CPython {} has no [wheels] section naming the toolchain to build \
                 wheels with; add one like the other recipes' (rustc-web, cargo-web)",
                r.minor
            );
        }
        self.helper_runner("wheels", r.wheels.apt.clone(), r.wheels.dnf.clone(), ui)
    }

    /// The lock of `request`: its file, or made now (when there is none, or on `--upgrade`),
    /// with the `libpq` stage it needed then.
    fn lock_for(
        &self,
        b: &Runner,
        finalize: &Done,
        request: &Request,
        ui: &dyn Reporter,
    ) -> Result<(Lock, Option<Done>)> {
        let r = self.recipe();
        match Lock::read(&request.lock)? {
            Some(lock) if !request.upgrade => {
                lock.check(request, &r.python.version, self.facts().arch.name)?;
                ui.message(&format!(
                    "{:<14} {} ({} files; --upgrade re-resolves)",
                    "wheels lock",
                    request.lock.display(),
                    lock.packages.len()
                ));
                Ok((lock, None))
            }
            _ => {
                // psycopg2's metadata comes from its setup.py, which asks pg_config: the lock
                // stage gets the libpq the build will link when the requirements name it.
                let mut deps = vec![finalize.clone()];
                let mut libpq = None;
                if request.names_libpq_user() {
                    let done = self.libpq(b, finalize, ui)?;
                    deps.push(done.clone());
                    libpq = Some(done);
                }
                Ok((self.lock_wheels(b, deps, request, ui)?, libpq))
            }
        }
    }

    /// Copies the wheels of the stage's output to `<out>/wheels/<python>-<arch>/`, with their
    /// SBOM beside them.
    fn collect(&self, stage_done: Done) -> Result<Built> {
        let r = self.recipe();
        let dir = self.facts().out.join("wheels").join(format!(
            "{}-{}",
            r.python.version,
            self.facts().arch.name
        ));
        unpack(&stage_done.output, &dir)?;
        let locked: Vec<Locked> =
            serde_json::from_slice(&std::fs::read(dir.join("lock.json")).with_context(|| {
                format!("the wheels stage wrote no lock.json in {}", dir.display())
            })?)?;
        let mut wheels = Vec::new();
        for locked in locked {
            let path = dir.join(&locked.wheel);
            let sha256 = sha256_file(&path)?;
            let size = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            wheels.push((locked, sha256, size));
        }
        let sbom = sbom(
            &wheels,
            &stage_done,
            &r.python.version,
            self.facts().arch.name,
        );
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

    /// Resolves `request` in the toolchain image and writes its lock to `request.lock`. Never
    /// cached: a lock is made to take the index as it is now.
    fn lock_wheels(
        &self,
        b: &Runner,
        deps: Vec<Done>,
        request: &Request,
        ui: &dyn Reporter,
    ) -> Result<Lock> {
        let scratch = Scratch::new(self.cache(), "wheels-request")?;
        let lock = {
            let mut stage = wheels_stage(scratch.path(), request, "lock")?;
            stage.name = "wheels-lock";
            stage.env.push(("LOCKED_AT".into(), unix_now().to_string()));
            stage.deps = deps;
            stage.source_date_epoch = Some(self.facts().source_date_epoch);
            let key = stage.key(b);
            let done = b
                .run(&stage, ui)
                .map_err(|err| explain(err, self.cache(), "wheels-lock", &key, request))?;
            let bytes = read_member(&done.output, "wheels.lock")?;
            let lock: Lock = serde_json::from_slice(&bytes)
                .context("the wheels-lock stage wrote a lock that does not parse")?;
            cache::write_atomic(&request.lock, &bytes)?;
            ui.message(&format!(
                "{:<14} {} ({} files, {} built from source; commit it, --upgrade re-resolves)",
                "wheels lock",
                request.lock.display(),
                lock.packages.len(),
                lock.packages.iter().filter(|p| p.build).count()
            ));
            lock
        };
        scratch.remove()?;
        Ok(lock)
    }

    /// The `libpq` stage: PostgreSQL's client library built against the tree's OpenSSL.
    fn libpq(&self, b: &Runner, finalize: &Done, ui: &dyn Reporter) -> Result<Done> {
        let r = self.recipe();
        let version = r.wheels.postgresql.as_deref().with_context(|| {
            format!(
                "the lock names psycopg2, which links libpq, and the recipe of CPython {} names \
                 no PostgreSQL release to build it from; add `postgresql = \"15.18\"` to its \
                 [wheels] section",
                r.minor
            )
        })?;
        let source = self.resolved().catalog.get("postgresql", version)?.clone();
        let tarball = self.resolved().fetch_one(&source, ui)?;
        let stage = StageSpec {
            name: "libpq",
            script: LIBPQ_SCRIPT,
            files: vec![],
            env: vec![],
            inputs: vec![Input {
                dest: "postgresql.tar.bz2".into(),
                host: tarball,
                content: source.sha256.clone(),
            }],
            deps: vec![finalize.clone()],
            output: "/out/libpq",
            source_date_epoch: Some(self.facts().source_date_epoch),
            reuse: false,
        };
        b.run(&stage, ui)
    }

    /// The `wheels` stage: builds what `lock` names, and nothing else.
    fn run_wheels_stage(
        &self,
        b: &Runner,
        deps: Vec<Done>,
        request: &Request,
        lock: &Lock,
        ui: &dyn Reporter,
    ) -> Result<Done> {
        let scratch = Scratch::new(self.cache(), "wheels-request")?;
        let done = {
            let mut stage = wheels_stage(scratch.path(), request, "build")?;
            let bytes = serde_json::to_vec_pretty(lock)?;
            let file = scratch.join("wheels.lock");
            std::fs::write(&file, &bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
            stage.inputs.push(Input {
                dest: "wheels.lock".into(),
                host: file,
                content: hex(&Sha256::digest(&bytes)),
            });
            stage.deps = deps;
            stage.source_date_epoch = Some(self.facts().source_date_epoch);
            let key = stage.key(b);
            b.run(&stage, ui)
                .map_err(|err| explain(err, self.cache(), "wheels", &key, request))?
        };
        scratch.remove()?;
        Ok(done)
    }
}

/// The stage spec both wheels stages share: the script, where pip looks, the CA bundle, and
/// (for `lock`) the requirements, written into `scratch`.
fn wheels_stage(scratch: &Path, request: &Request, mode: &str) -> Result<StageSpec> {
    let mut inputs = Vec::new();
    if mode == "lock" {
        let requirements = scratch.join("requirements.in");
        std::fs::write(&requirements, &request.requirements)
            .with_context(|| format!("cannot write {}", requirements.display()))?;
        inputs.push(Input {
            dest: "requirements.in".into(),
            host: requirements,
            content: hex(&Sha256::digest(&request.requirements)),
        });
    }
    for (n, dir) in request.find_link_dirs.iter().enumerate() {
        inputs.push(Input {
            dest: format!("find-links/{n}"),
            host: dir.clone(),
            content: dir_key(dir)?,
        });
    }
    let mut env = vec![("MODE".to_string(), mode.to_string())];
    if let Some(cert) = &request.cert {
        let text = std::fs::read(cert)
            .with_context(|| format!("cannot read the CA bundle {} (--cert)", cert.display()))?;
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
    Ok(StageSpec {
        name: "wheels",
        script: SCRIPT,
        files: vec![("wheels.py", BUILD_PY)],
        env,
        inputs,
        deps: vec![],
        output: "/out",
        source_date_epoch: None,
        reuse: false,
    })
}

/// The bytes of the file `name` in a stage's output tar.
fn read_member(output: &Path, name: &str) -> Result<Vec<u8>> {
    let found = tarwalk::for_each_entry(output, Compression::None, |path, entry| {
        if !entry.header().entry_type().is_file()
            || Path::new(path).file_name() != Some(name.as_ref())
        {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        Ok(Some(bytes))
    })?;
    found.with_context(|| format!("the stage wrote no {name} ({})", output.display()))
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
    stage: &str,
    key: &str,
    request: &Request,
) -> anyhow::Error {
    let Some(log) = newest_log(cache, stage, key) else {
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
    if let Some(changed) = hash_mismatch(&text) {
        return err.context(format!(
            "{changed}: the file is not the one {} pinned. The same version now has other \
             bytes (a re-upload, or a tampered copy); if the change is expected, lock again \
             with --upgrade and review the difference (log: {})",
            request.lock.display(),
            log.display()
        ));
    }
    if let Some(what) = text
        .lines()
        .find_map(|l| l.strip_prefix("python-fips-wheels: FAILED "))
    {
        // `<name> <version> at <step>: <cause>`
        let (who, rest) = what.split_once(" at ").unwrap_or((what, ""));
        return err.context(format!(
            "cannot build {who}: {} (log: {})",
            rest.trim(),
            log.display()
        ));
    }
    err
}

/// pip's `--require-hashes` refusal, as `<requirement> (<file>): expected sha256 A, got B`.
fn hash_mismatch(log: &str) -> Option<String> {
    let at = log.find("DO NOT MATCH THE HASHES")?;
    let mut lines = log[at..].lines().skip(1).map(str::trim);
    let from = lines.find(|l| l.contains(" from ") && l.ends_with(':'))?;
    let (requirement, url) = from.trim_end_matches(':').split_once(" from ")?;
    let file = url.rsplit('/').next().unwrap_or(url);
    let expected = lines.next()?.strip_prefix("Expected sha256")?.trim();
    let got = lines.next()?.strip_prefix("Got")?.trim();
    Some(format!(
        "{requirement} ({file}): expected sha256 {expected}, got {got}"
    ))
}

/// The newest log of the stage `stage` with `key`.
fn newest_log(cache: &cache::Cache, stage: &str, key: &str) -> Option<PathBuf> {
    let prefix = format!("{stage}-{}-", &key[..12]);
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
    let host = build.host();
    let mut key = Key::new();
    key.set("runtime-image", runtime)
        .set_sha256("dockerfile", DOCKERFILE);
    for (l, sha256, _) in &built.wheels {
        key.set(format!("wheel:{}", l.wheel), sha256.clone());
    }
    let key = key.hex();
    let image = KeyedImage {
        name: "wheels image",
        key: &key,
        label: Some(LABEL_WHEELS_KEY),
        tags,
    };
    let (id, _) = host.keyed_image(&image, ui, || {
        let names: Vec<&str> = built
            .wheels
            .iter()
            .map(|(l, ..)| l.wheel.as_str())
            .collect();
        let build = ContextBuild {
            name: "wheels image",
            what: "installing the wheels into the runtime image".into(),
            scratch: "wheels-image",
            log: host.stamped_log(&format!("wheels-image-{}", &key[..12])),
            platform: None,
            tags,
            // The runtime image's own key and tarball labels would make this image pass for it.
            labels: vec![
                (LABEL_WHEELS_KEY.to_string(), key.clone()),
                (image::LABEL_KEY.to_string(), format!("wheels:{key}")),
                (image::LABEL_TARBALL.to_string(), String::new()),
                ("org.python-fips.wheels".to_string(), names.join(" ")),
            ],
            hint: None,
        };
        // Its build is shown as this step's time alone.
        let id = host.build_context(&build, &Unshown, |context| {
            write_context(context, runtime, built)
        })?;
        Ok(Made::Built {
            id,
            note: tags.join(", "),
        })
    })?;
    Ok(id)
}

/// Writes the build context of the wheels image into `context`: the Dockerfile on `runtime`
/// and the wheels of `built`.
fn write_context(context: &Path, runtime: &str, built: &Built) -> Result<()> {
    let dockerfile = context.join("Dockerfile");
    std::fs::write(&dockerfile, DOCKERFILE.replace("@RUNTIME_IMAGE@", runtime))
        .with_context(|| format!("cannot write {}", dockerfile.display()))?;
    let wheels = context.join("wheels");
    std::fs::create_dir(&wheels).with_context(|| format!("cannot create {}", wheels.display()))?;
    for (l, ..) in &built.wheels {
        let (from, to) = (built.dir.join(&l.wheel), wheels.join(&l.wheel));
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn lock_of(requirements: &[&str]) -> Lock {
        Lock {
            format: LOCK_FORMAT,
            python: "3.13.15".into(),
            arch: "x86_64".into(),
            requirements: requirements.iter().map(|r| r.to_string()).collect(),
            packages: vec![LockedFile {
                name: "psycopg2".into(),
                version: "2.9.13".into(),
                file: "psycopg2-2.9.13.tar.gz".into(),
                sha256: "ab".repeat(32),
                build: true,
                build_requires: vec![],
            }],
        }
    }

    #[test]
    fn a_lock_is_refused_for_other_requirements_another_minor_or_arch() {
        let dir = TempDir::new("wheels-lock");
        let request = Request {
            requirements: "psycopg2==2.9.13\n".into(),
            lock: dir.path().join("wheels.lock"),
            ..Request::default()
        };
        assert!(request.names_libpq_user());
        let lock = lock_of(&["psycopg2==2.9.13"]);
        lock.check(&request, "3.13.9", "x86_64").unwrap();
        assert!(lock.links_libpq());

        let err = lock_of(&["cryptography"])
            .check(&request, "3.13.15", "x86_64")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("locks `cryptography`, not `psycopg2==2.9.13`; pass --upgrade"),
            "{err}"
        );
        let err = lock.check(&request, "3.12.9", "x86_64").unwrap_err();
        assert!(
            err.to_string()
                .contains("locked for CPython 3.13.15 on x86_64, not 3.12.9")
        );
        assert!(lock.check(&request, "3.13.15", "aarch64").is_err());
    }

    #[test]
    fn requirements_that_link_libpq_are_named_as_pip_spells_them() {
        let request = |text: &str| Request {
            requirements: text.into(),
            ..Request::default()
        };
        for named in [
            "Psycopg2>=2.9\n",
            "fastapi\npsycopg_c ; python_version>'3'\n",
        ] {
            assert!(request(named).names_libpq_user(), "{named}");
        }
        for other in ["psycopg2-binary\n", "psycopg[binary]\n", "cryptography\n"] {
            assert!(!request(other).names_libpq_user(), "{other}");
        }
    }

    #[test]
    fn a_lock_file_of_another_format_or_none_is_named() {
        let dir = TempDir::new("wheels-lock-read");
        let path = dir.path().join("wheels.lock");
        assert!(Lock::read(&path).unwrap().is_none());
        std::fs::write(&path, "not json").unwrap();
        let err = format!("{:#}", Lock::read(&path).unwrap_err());
        assert!(err.contains("is not a wheels lock; remove it"), "{err}");
        let mut lock = lock_of(&["psycopg2"]);
        lock.format = 9;
        std::fs::write(&path, serde_json::to_vec(&lock).unwrap()).unwrap();
        let err = Lock::read(&path).unwrap_err().to_string();
        assert!(err.contains("a lock of format 9"), "{err}");
        lock.format = LOCK_FORMAT;
        std::fs::write(&path, serde_json::to_vec(&lock).unwrap()).unwrap();
        assert_eq!(Lock::read(&path).unwrap().unwrap().packages.len(), 1);
    }

    #[test]
    fn pips_hash_refusal_becomes_one_line_with_both_digests() {
        let log = "Collecting python-fips-pinned==1.0\n\
            ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have \
            updated the package versions, please update the hashes. Otherwise, examine the \
            package contents carefully; someone may have tampered with them.\n    \
            python-fips-pinned==1.0 from file:///build/find-links/0/python_fips_pinned-1.0.tar.gz:\n        \
            Expected sha256 1111\n             Got        2222\n";
        assert_eq!(
            hash_mismatch(log).unwrap(),
            "python-fips-pinned==1.0 (python_fips_pinned-1.0.tar.gz): expected sha256 1111, got 2222"
        );
        assert!(hash_mismatch("ERROR: No matching distribution found for x").is_none());
    }
}
