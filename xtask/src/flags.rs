//! The whole command line, declared in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    about = "Build a FIPS-enforcing CPython against a FIPS-validated OpenSSL provider"
)]
pub struct Xtask {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List the recipes: pinned CPython, OpenSSL and FIPS provider, and what is cached.
    Recipes(Recipes),
    /// Download and verify every source a recipe needs.
    Fetch(Fetch),
    /// Fetch, extract and patch the CPython sources; print the patched tree's path.
    Prepare(Prepare),
    /// Build the FIPS OpenSSL and CPython in containers and package /opt/python-fips.
    Python(Python),
    /// Build the runtime image: the recipe's runtime base with the tarball at /opt/python-fips.
    Image(Image),
    /// Prove the FIPS behaviour of a tarball or an image in its runtime image.
    Verify(Verify),
    /// Build wheels from source against the tree's OpenSSL, with the recipe's interpreter.
    Wheels(Wheels),
    /// Find ELF files that carry their own crypto in a tree, a venv, a wheel or an image.
    Audit(Audit),
    /// Open an interactive shell in a stage's container.
    Shell(ShellCmd),
    /// Build a shipped tarball again from its record and compare it byte for byte.
    Rebuild(Rebuild),
    /// Make a reproducible Debian base image with mmdebstrap (for machines without an image registry).
    BaseImage(BaseImage),
    /// Time the floor, then a cold build, a warm no-op and two patch changes, each to a verified image.
    Bench(Bench),
    /// Re-hash the cached downloads and check the stage entries; `--evict` moves damaged ones out.
    VerifyCache(VerifyCache),
    /// Write a uv download channel (install_only tarballs and downloads.json) from runtime tarballs.
    Channel(Channel),
    /// Push verified runtime images to an OCI registry under one multi-arch tag, with the SBOM,
    /// the verify verdict, provenance and a FIPS attestation attached to each.
    Publish(Publish),
}

/// Where the sources come from and where the cache lives.
#[derive(Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// CPython minor (`3.12`) or full version (`3.12.15`).
    #[arg(long)]
    pub version: Option<String>,
    /// Use this CPython release instead of the recipe's (must be in recipes/sources.toml).
    #[arg(long, value_name = "X.Y.Z")]
    pub python: Option<String>,
    /// Use this OpenSSL release for libcrypto, libssl and the openssl command.
    #[arg(long, value_name = "V")]
    pub openssl: Option<String>,
    /// Build fips.so from this OpenSSL release.
    #[arg(long, value_name = "V")]
    pub fips_provider: Option<String>,
    /// An extra source catalog read after recipes/sources.toml, for sources the shipped one does
    /// not name (the tests' tests/sources.toml); its entries are asked for by their own versions.
    #[arg(long, value_name = "FILE", env = "PYTHON_FIPS_SOURCE_CATALOG")]
    pub source_catalog: Option<PathBuf>,
    /// Look for `<URL>/<upstream file name>` here first; http(s)://, file:// or a directory. Repeatable.
    #[arg(long, value_name = "URL")]
    pub mirror: Vec<String>,
    /// Use the cache only; never touch the network.
    #[arg(long)]
    pub offline: bool,
    /// Cache root (default: `cache/` at the repository root).
    #[arg(long, value_name = "DIR", env = "PYTHON_FIPS_CACHE")]
    pub cache: Option<PathBuf>,
    /// Directory holding `<minor>/*.patch` (default: `patches/`).
    #[arg(long, value_name = "DIR")]
    pub patches: Option<PathBuf>,
    /// Build without the project's patches: the negative control, never for shipping.
    #[arg(long)]
    pub no_fips_patch: bool,
}

/// The engine and the cache of a command that runs containers outside a build (a build's are
/// in `BuildArgs` and `SourceArgs`).
#[derive(Args, Debug, Clone, Default)]
pub struct HostArgs {
    /// Container engine CLI: `docker` or `podman` (default: the first that answers).
    #[arg(long)]
    pub engine: Option<String>,
    /// Cache root (default: `cache/` at the repository root).
    #[arg(long, value_name = "DIR", env = "PYTHON_FIPS_CACHE")]
    pub cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct Recipes {
    /// Cache root (default: `cache/` at the repository root).
    #[arg(long, value_name = "DIR", env = "PYTHON_FIPS_CACHE")]
    pub cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct Fetch {
    #[command(flatten)]
    pub sources: SourceArgs,
}

#[derive(Args, Debug)]
pub struct Prepare {
    #[command(flatten)]
    pub sources: SourceArgs,
}

/// How a build runs: the engine, the parallelism and where results go.
#[derive(Args, Debug, Clone, Default)]
pub struct BuildArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Container engine CLI: `docker` or `podman` (default: the first that answers).
    #[arg(long)]
    pub engine: Option<String>,
    /// Target architecture: `aarch64` (or `arm64`), `x86_64` (or `amd64`); a foreign one is
    /// cross-compiled. `python` and `image` take a comma-separated list and build each in turn
    /// (default: the engine's own).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Parallel make jobs (default: all cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// A stage cache shared through an OCI registry, as `host[:port]/repository`: each stage's
    /// key is looked up there before it runs and its output pushed after, and the builder image
    /// likewise. Credentials are those of `docker login`/`podman login`; plain HTTP is used for
    /// a loopback host only. A registry that fails costs a warning, never the build.
    #[arg(long, value_name = "REF", env = "PYTHON_FIPS_CACHE_REGISTRY")]
    pub cache_registry: Option<String>,
    /// Where artifacts go (default: `dist/`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write `{stages: [{name, key, cached, origin: {from: ran|local|remote, remote, digest},
    /// start, seconds, script_seconds}], artifact, sha256, dev_artifact, dev_sha256, sbom,
    /// build_info, image: {id, tags, cached}, verify: {passed, failed, json}, timings: {steps:
    /// [{name, source, start, seconds}], seconds}, reproducible}` to this file (`python` only).
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Skip the runtime image and the checks of `verify` that otherwise end every build.
    #[arg(long)]
    pub no_verify: bool,
    /// The runtime image: `base` (the recipe's runtime base image) or `distroless` (FROM scratch
    /// with only the files the tree needs from the base: no shell, no package manager).
    #[arg(long, value_enum, default_value_t = Runtime::Base)]
    pub runtime: Runtime,
}

/// The kind of runtime image.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Runtime {
    /// The recipe's runtime base image plus the system libraries the tree links.
    #[default]
    Base,
    /// FROM scratch: the tree, the C library, the loader, the libraries the tree loads, CA
    /// certificates and the user, and nothing else.
    Distroless,
}

#[derive(Args, Debug)]
pub struct Python {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Build a second time in a fresh cache (sharing only the downloads and the builder image)
    /// and fail unless both tarballs are identical, naming the files that differ.
    #[arg(long)]
    pub check_reproducible: bool,
    /// Fetch and patch, then list every stage with its key and whether it is cached; run nothing
    /// (`--report` gets the stages).
    #[arg(long, conflicts_with = "check_reproducible")]
    pub dry_run: bool,
    /// Write an HTML page of when each step ran (start: fetch, prepare and the builder image;
    /// every stage, package, image, verify) on one
    /// time axis: `<report>.timings.html` beside `--report`, else `<artifact>.timings.html`
    /// beside the tarball. Self-contained; opens from the file.
    #[arg(long)]
    pub timings: bool,
}

#[derive(Args, Debug)]
pub struct Image {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Tag the image with this name (repeatable; default: `python-fips:<python>` and
    /// `python-fips:<minor>`, with `-unpatched` under `--no-fips-patch`).
    #[arg(long)]
    pub tag: Vec<String>,
}

#[derive(Args, Debug)]
pub struct Verify {
    /// A tarball made by `python` (its runtime image is found or built) or a runtime image.
    pub target: String,
    /// Write the checks here (default: `<tarball>.verify.json` for a tarball, none for an image).
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
    /// A PostgreSQL server (a libpq connection string, reached from the host's network): an
    /// image with psycopg2 connects to it over TLS in FIPS mode.
    #[arg(long, value_name = "DSN")]
    pub postgres: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Args, Debug)]
pub struct Rebuild {
    /// The shipped runtime tarball, or the `<artifact>.build-info.json` beside it: the record
    /// (its BUILD-INFO.json) and the sha256 to reach (its `.sha256` file).
    pub record: PathBuf,
    /// The sha256 to reach, when the record's `.sha256` file is not beside it.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Look for the sources here first (as `python --mirror`). Repeatable.
    #[arg(long, value_name = "URL")]
    pub mirror: Vec<String>,
    /// The extra source catalog the recorded build read (as `python --source-catalog`).
    #[arg(long, value_name = "FILE", env = "PYTHON_FIPS_SOURCE_CATALOG")]
    pub source_catalog: Option<PathBuf>,
    /// The OCI repository the base and builder images (by the record's ids) come from, and the
    /// stages of `--reuse-stage`.
    #[arg(long, value_name = "REF", env = "PYTHON_FIPS_CACHE_REGISTRY")]
    pub cache_registry: Option<String>,
    /// Take this stage's entry from `--cache-registry` by its recorded key instead of compiling
    /// it (repeatable): a partial rebuild, for when a whole one costs too much. Every other stage
    /// runs in a fresh cache, whose compiler cache is empty.
    #[arg(long, value_name = "STAGE")]
    pub reuse_stage: Vec<crate::graph::Stage>,
    /// Parallel make jobs (default: all cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// The engine, and the cache whose scratch space holds the rebuild's fresh cache.
    #[command(flatten)]
    pub host: HostArgs,
    /// Write `{record, expected, sha256, identical, recompiled, reused, differences}` here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ShellCmd {
    #[command(flatten)]
    pub build: BuildArgs,
    /// The stage whose inputs the container holds.
    #[arg(long, value_enum, required_unless_present = "failed")]
    pub stage: Option<crate::graph::Stage>,
    /// Enter the container of the most recent failed stage instead.
    #[arg(long, conflicts_with = "stage")]
    pub failed: bool,
}

#[derive(Args, Debug)]
pub struct BaseImage {
    /// Debian suite to make the image of, e.g. `bookworm`.
    #[arg(long, value_name = "SUITE", alias = "debootstrap")]
    pub suite: String,
    /// Leave out manuals, translations and documentation but copyright files (the runtime
    /// image's base); the default tag is then `debian:<suite>-slim`.
    #[arg(long)]
    pub slim: bool,
    /// Image tag (default: `debian:<suite>`).
    #[arg(long)]
    pub tag: Option<String>,
    /// Debian mirror URI (default: the first one in this machine's apt configuration).
    #[arg(long, value_name = "URI")]
    pub mirror_uri: Option<String>,
    /// Rebuild even if the tag exists.
    #[arg(long)]
    pub force: bool,
    /// The image's architecture, `arm64` or `amd64` (default: the engine's). A foreign one needs
    /// QEMU user emulation; its default tag is Docker Hub's for that architecture
    /// (`arm64v8/debian:<suite>`).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
    /// An OCI repository (`host:port/name`) the image is taken from when it has the same one
    /// (the same suite, mirror state and options), and given to when it does not.
    #[arg(long, value_name = "REF", env = "PYTHON_FIPS_CACHE_REGISTRY")]
    pub cache_registry: Option<String>,
}

#[derive(Args, Debug)]
pub struct Bench {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Also write the figures to this file.
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
    /// Also write each run's page as `python --timings` does, with the floor figure it is
    /// compared with marked: `bench-<run>.timings.html` in the output directory (`--out`).
    #[arg(long)]
    pub timings: bool,
}

#[derive(Args, Debug)]
pub struct Wheels {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Requirement specifiers to build, e.g. `cryptography` or `psycopg2==2.9.10`.
    #[arg(value_name = "REQUIREMENT")]
    pub requirements: Vec<String>,
    /// Read requirement specifiers from this file too (pip's format, one per line).
    #[arg(short = 'r', long = "requirement", value_name = "FILE")]
    pub requirement_files: Vec<PathBuf>,
    /// Passed to pip: a package index to use instead of the default one.
    #[arg(long, value_name = "URL")]
    pub index_url: Option<String>,
    /// Passed to pip: a URL or a local directory of sdists and wheels (repeatable). A directory
    /// is copied into the build, for machines without the package index.
    #[arg(long, value_name = "URL|DIR")]
    pub find_links: Vec<String>,
    /// CA bundle for TLS to the index and to crates.io (pip's `--cert`; default `$PIP_CERT`),
    /// for networks whose proxy signs with its own CA. Copied into the build.
    #[arg(long, value_name = "FILE", env = "PIP_CERT")]
    pub cert: Option<PathBuf>,
    /// Passed to pip: use only `--find-links`, never an index (for air-gapped machines).
    #[arg(long, conflicts_with = "index_url")]
    pub no_index: bool,
    /// The lock: every sdist and wheel (and each sdist's build requirements) by version and
    /// sha256. Built from when it exists; written by resolving the requirements when it does not.
    #[arg(long, value_name = "FILE", default_value = "wheels.lock")]
    pub lock: PathBuf,
    /// Resolve the requirements again and rewrite the lock, taking the index's newest releases.
    #[arg(long)]
    pub upgrade: bool,
    /// Write the lock (when there is none, or with --upgrade) and build nothing.
    #[arg(long, conflicts_with = "image")]
    pub lock_only: bool,
    /// Also build the runtime image with the wheels installed, verify it and audit it.
    #[arg(long)]
    pub image: bool,
    /// Tag of that image (default: `python-fips:<python>-wheels`).
    #[arg(long, requires = "image")]
    pub tag: Vec<String>,
    /// With --image: a PostgreSQL server (a libpq connection string, reached from the host's
    /// network) that verify connects to over TLS with psycopg2.
    #[arg(long, value_name = "DSN", requires = "image")]
    pub postgres: Option<String>,
}

#[derive(Args, Debug)]
pub struct Audit {
    /// A tree, a venv or any directory, a `.whl` file, an ELF file, or an image name.
    pub target: String,
    /// Write the findings as JSON to this file (`-` for standard output instead of the table).
    #[arg(long, value_name = "FILE.json")]
    pub json: Option<PathBuf>,
    /// The engine and cache, for an image.
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Args, Debug)]
pub struct VerifyCache {
    /// Move the damaged entries out of the cache (by rename), so the next run makes them again.
    #[arg(long)]
    pub evict: bool,
    /// Cache root (default: `cache/` at the repository root).
    #[arg(long, value_name = "DIR", env = "PYTHON_FIPS_CACHE")]
    pub cache: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct Channel {
    /// Runtime tarballs made by `python` (`python-fips-….tar.gz`), one per version and
    /// architecture.
    #[arg(required = true, value_name = "TARBALL")]
    pub tarballs: Vec<PathBuf>,
    /// The channel directory: each tarball's install_only archive and `downloads.json` go
    /// there; the entries already in `downloads.json` for other builds are kept.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The URL the channel directory is served at: each entry's `url` is this plus its
    /// archive's name.
    #[arg(long, value_name = "URL")]
    pub base_url: String,
}

#[derive(Args, Debug)]
pub struct Publish {
    /// The build, as for `image`: `--arch x86_64,aarch64` publishes both under one index
    /// (default: the engine's own architecture); `--runtime distroless` publishes that image
    /// under `-distroless` tags; `--report` gets what was pushed
    /// (`{registry, tags, index, platforms: [{arch, platform, image_id, tarball_sha256,
    /// manifest, attachments}], uploaded: {blobs, manifests}}`).
    #[command(flatten)]
    pub build: BuildArgs,
    /// The repository to push to, `host[:port]/repository`. Credentials are those of `docker
    /// login`/`podman login`; plain HTTP is used for a loopback host only.
    #[arg(long, value_name = "HOST[:PORT]/REPO")]
    pub registry: String,
    /// Put the index under this tag (repeatable; default: the CPython version and its minor,
    /// `3.13.15` and `3.13`, with `-distroless` for that runtime).
    #[arg(long)]
    pub tag: Vec<String>,
    /// Where the project's source is, for the `org.opencontainers.image.source` annotation
    /// (none by default: this checkout's address is not something the images should carry).
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,
    /// Sign each image's manifest and the index with this unencrypted P-256 key (PEM), in the
    /// form `cosign verify --key` checks: the signatures go under `sha256-<hex>.sig`.
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
}
