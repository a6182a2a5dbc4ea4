//! What a build is asked to do, typed, made from the command line once: the sources and where
//! they come from, the cache, the engine, the target, the parallelism and the outputs. The
//! second build of `--check-reproducible` and `bench`'s runs are derived from a first one.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::arch::{self, Arch};
use crate::catalog::Request;
use crate::flags::{BuildArgs, Runtime, SourceArgs};

/// Where the sources come from and where the cache lives.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub request: Request,
    /// An extra catalog read after the shipped one (`--source-catalog`).
    pub source_catalog: Option<PathBuf>,
    /// Tried before the upstream URLs, in order.
    pub mirrors: Vec<String>,
    /// Use the cache only; never touch the network.
    pub offline: bool,
    /// The cache root (`None`: `cache/` at the project root).
    pub cache: Option<PathBuf>,
    /// The directory of `<minor>/*.patch`.
    pub patches: PathBuf,
}

impl SourceConfig {
    pub fn from_args(args: &SourceArgs) -> SourceConfig {
        SourceConfig {
            request: Request {
                version: args.version.clone(),
                python: args.python.clone(),
                openssl: args.openssl.clone(),
                fips_provider: args.fips_provider.clone(),
                no_fips_patch: args.no_fips_patch,
            },
            source_catalog: args.source_catalog.clone(),
            mirrors: args.mirror.clone(),
            offline: args.offline,
            cache: args.cache.clone(),
            patches: args
                .patches
                .clone()
                .unwrap_or_else(|| crate::project_root().join("patches")),
        }
    }
}

/// How a build runs and where its results go.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    pub sources: SourceConfig,
    /// The engine's program (`None`: the first of docker and podman that answers).
    pub engine: Option<String>,
    /// The target, when one was named (`None`: the engine's own architecture).
    pub target: Option<&'static Arch>,
    /// Parallel jobs for make and the bytecode compiler.
    pub jobs: usize,
    /// The OCI repository that shares stage entries and builder images (`--cache-registry`).
    pub cache_registry: Option<String>,
    /// Where the tarballs, SBOM and checksums go.
    pub out: PathBuf,
    /// Where `--report` goes, if asked for.
    pub report: Option<PathBuf>,
    /// Make the runtime image and verify it after the build.
    pub verify: bool,
    pub runtime: Runtime,
    /// The only stages taken from and given to the shared cache (`None`: all of them).
    pub shared_stages: Option<std::collections::BTreeSet<String>>,
    /// Make a builder image that neither the engine nor the shared cache has (`rebuild`: no).
    pub make_builder: bool,
}

impl BuildConfig {
    /// The configuration of one build (one architecture: `arch::per_arch` splits a list first).
    /// Every flag is checked here, before anything is downloaded or built.
    pub fn from_args(args: &BuildArgs) -> Result<BuildConfig> {
        if args.jobs == Some(0) {
            bail!(
                "--jobs 0 runs nothing: give 1 or more parallel jobs, or leave --jobs out for all cores"
            );
        }
        let cache_registry = args.cache_registry.clone().filter(|r| !r.is_empty());
        if let Some(reference) = &cache_registry {
            // Opening sends nothing; it checks the reference as the build would.
            crate::registry::Registry::open(reference)?;
        }
        Ok(BuildConfig {
            sources: SourceConfig::from_args(&args.sources),
            engine: args.engine.clone(),
            target: args.arch.as_deref().map(arch::parse).transpose()?,
            cache_registry,
            jobs: args.jobs.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            }),
            out: args
                .out
                .clone()
                .unwrap_or_else(|| crate::project_root().join("dist")),
            report: args.report.clone(),
            verify: !args.no_verify,
            runtime: args.runtime,
            shared_stages: None,
            make_builder: true,
        })
    }

    /// The same build in another cache, with its outputs inside that cache, no report and no
    /// shared cache: for builds that must not touch the user's and must run every stage (the
    /// reproducibility check, bench's scratch builds).
    pub fn in_cache(&self, root: PathBuf) -> BuildConfig {
        let mut config = self.clone();
        config.cache_registry = None;
        config.out = root.join("dist");
        config.report = None;
        config.sources.cache = Some(root);
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(registry: Option<&str>, jobs: Option<usize>) -> BuildArgs {
        BuildArgs {
            cache_registry: registry.map(String::from),
            jobs,
            ..BuildArgs::default()
        }
    }

    #[test]
    fn a_malformed_cache_registry_is_refused_with_the_configuration() {
        for bad in [
            "http://127.0.0.1:5000/cache",
            "no-repository",
            "127.0.0.1:port/cache",
            "127.0.0.1:5000/Upper",
        ] {
            let err = BuildConfig::from_args(&args(Some(bad), None))
                .expect_err("a malformed --cache-registry was accepted");
            let text = format!("{err:#}");
            assert!(
                text.contains("--cache-registry") && text.contains(bad),
                "{text}"
            );
        }
        let config =
            BuildConfig::from_args(&args(Some("127.0.0.1:5000/team/cache"), None)).unwrap();
        assert_eq!(
            config.cache_registry.as_deref(),
            Some("127.0.0.1:5000/team/cache")
        );
    }

    #[test]
    fn zero_jobs_is_refused() {
        let err = BuildConfig::from_args(&args(None, Some(0))).expect_err("--jobs 0 was accepted");
        let text = format!("{err:#}");
        assert!(text.contains("--jobs 0"), "{text}");
        assert_eq!(
            BuildConfig::from_args(&args(None, Some(3))).unwrap().jobs,
            3
        );
    }
}
