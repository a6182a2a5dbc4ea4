//! A build: the resolved recipe, its patched tree, the engine and builder images, and the stage
//! graph described from the graph's edges and run through the stage cache. `ship` packages what
//! it made.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::arch::{self, Arch};
use crate::build_info;
use crate::cache::Cache;
use crate::catalog::Recipe;
use crate::config::BuildConfig;
use crate::digest::hex;
use crate::engine::Engine;
use crate::pipeline::{self, Done, Input, Runner, StageSpec};
use crate::prepare::{Resolved, SourceTree, file_name};
use crate::progress::Reporter;
use crate::store::Remote;
use crate::{builder, graph, sbom};

/// A build in progress: the resolved recipe, its patched tree, the engine and the builder
/// images. Other modules read it through its methods and its `Facts`.
pub struct Build<'a> {
    ctx: Resolved,
    tree: SourceTree,
    engine: Engine,
    /// The shared stage caches (`--cache-registry`), asked after the local cache.
    remotes: Vec<Box<dyn Remote + Sync>>,
    config: BuildConfig,
    sh: &'a Shell,
    facts: Facts,
    /// The builder image of the engine's own architecture (the cross build's build interpreter
    /// comes from it); `facts.builder_id` itself unless cross-compiling.
    native_image_id: String,
    /// `--dry-run`: stages report their keys and run nothing.
    dry_run: bool,
    /// When the run began (before fetching): every step's start is measured from here.
    started: Instant,
    /// Seconds `start` took: resolving, fetching, preparing the tree and the builder image.
    start_seconds: f64,
    _lock: crate::cache::CacheLock,
}

/// What a build is, found once by `Build::start`: everything the package step, the images and
/// the reports need to know of it besides the recipe.
pub struct Facts {
    /// `python-fips-<python>-openssl-<lib>-fips-<provider>-linux-<arch>`.
    pub artifact: String,
    /// The target architecture.
    pub arch: &'static Arch,
    /// The engine's own architecture, which runs every build step.
    pub build_arch: &'static Arch,
    /// The builder image (the cross builder when cross-compiling), by id.
    pub builder_id: String,
    /// The builder's base image: its id and the content key `base-image` labelled it with.
    pub base_id: String,
    pub base_key: String,
    /// The project checkout this build runs from.
    pub revision: build_info::Revision,
    /// The patched tree's SOURCE_DATE_EPOCH.
    pub source_date_epoch: u64,
    /// The patches applied, as `<minor>/<file>` with the sha256 of their bytes.
    pub patches: Vec<sbom::Patch>,
    /// Where the tarballs, SBOM and checksums go.
    pub out: PathBuf,
}

impl Facts {
    /// Whether the tree is cross-compiled (its target is not the engine's architecture).
    pub fn cross(&self) -> bool {
        self.arch != self.build_arch
    }
}

/// The stages that ran (or were cached), in order, each under its graph node.
pub struct Stages {
    stages: Vec<(graph::Stage, Done)>,
}

impl Stages {
    fn new() -> Stages {
        Stages { stages: Vec::new() }
    }

    /// The outcome of `stage`, if this build has run it.
    pub fn get(&self, stage: graph::Stage) -> Option<&Done> {
        self.stages
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, d)| d)
    }

    /// The outcome of `stage`, which the graph's order guarantees has run.
    pub fn of(&self, stage: graph::Stage) -> Result<&Done> {
        self.get(stage).with_context(|| {
            format!("the {stage} stage has not run before the stages that read it")
        })
    }

    /// The outcome of the stage whose graph node is named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Done> {
        self.iter().find(|d| d.name == name)
    }

    /// The outcomes in the order the stages ran.
    pub fn iter(&self) -> impl Iterator<Item = &Done> {
        self.stages.iter().map(|(_, d)| d)
    }

    /// The outcomes in the order the stages ran, taken out.
    pub fn into_vec(self) -> Vec<Done> {
        self.stages.into_iter().map(|(_, d)| d).collect()
    }
}

/// What one stage reads of the stages before it: the outcomes of its graph edges that this
/// build has.
struct Deps<'d> {
    stage: graph::Stage,
    found: Vec<(graph::Stage, &'d Done)>,
}

impl<'d> Deps<'d> {
    /// The edges of `stage` (`graph::Stage::deps`) among the stages of `plan`, from `done`.
    fn of(stage: graph::Stage, plan: &[graph::Stage], done: &'d Stages) -> Result<Deps<'d>> {
        let mut found = Vec::new();
        for &dep in stage.deps().iter().filter(|d| plan.contains(d)) {
            found.push((dep, done.of(dep)?));
        }
        Ok(Deps { stage, found })
    }

    /// The outcome of `dep`, when this build has that stage.
    fn get(&self, dep: graph::Stage) -> Option<&'d Done> {
        self.found.iter().find(|(s, _)| *s == dep).map(|(_, d)| *d)
    }

    /// The outcome of `dep`, which every build with this stage has.
    fn need(&self, dep: graph::Stage) -> Result<&'d Done> {
        self.get(dep).with_context(|| {
            format!(
                "the {} stage reads the {dep} stage, which this build lacks",
                self.stage
            )
        })
    }
}

impl<'a> Build<'a> {
    /// Resolves the recipe, finds the engine, fetches and patches the sources and makes the
    /// builder image.
    pub fn start(sh: &'a Shell, config: &BuildConfig, ui: &dyn Reporter) -> Result<Build<'a>> {
        let started = Instant::now();
        let ctx = Resolved::new(&config.sources)?;
        // Before any download: without an engine, nothing fetched could be used.
        let engine = Engine::detect(sh, config.engine.as_deref())?;
        // A historical or unvalidated provider builds, with a warning naming the alternative.
        if let Some(warning) =
            (ctx.catalog).provider_warning(&ctx.recipe.fips_provider, &crate::date::today())
        {
            ui.message(&format!("warning: {warning}"));
        }
        let lock = ctx.cache.lock(ui)?;
        ctx.fetch(ui)?;
        let tree = ctx.prepare(ui)?;
        let host = crate::host::Host::new(sh, &engine, &ctx.cache);
        host.prune_stale()?;
        let engine_arch = engine.arch(sh)?;
        let build_arch = arch::parse(&engine_arch).with_context(|| {
            format!("the engine runs on {engine_arch}, an architecture this tool cannot build on")
        })?;
        let arch = config.target.unwrap_or(build_arch);
        let remotes = crate::registry::shared_caches(config.cache_registry.as_deref())?;
        let images = builder::Images::new(&host, &remotes, config.make_builder);
        let native = images.ensure(&ctx.recipe.builder, ui)?;
        let builder_id = match arch == build_arch {
            true => native.id.clone(),
            false => images.ensure_cross(&ctx.recipe.builder, &native, arch, ui)?,
        };
        let base = &ctx.recipe.builder.base_image;
        let base_key = (engine.image_labels(sh, base)?)
            .remove(crate::base_image::LABEL_KEY)
            .unwrap_or_default();
        let facts = Facts {
            artifact: artifact_name(&ctx.recipe, arch),
            arch,
            build_arch,
            builder_id,
            base_id: native.base_id,
            base_key,
            revision: build_info::Revision::of_checkout(&crate::project_root()),
            source_date_epoch: tree.source_date_epoch,
            patches: patches(&ctx.recipe)?,
            out: config.out.clone(),
        };
        Ok(Build {
            ctx,
            tree,
            engine,
            remotes,
            config: config.clone(),
            sh,
            facts,
            native_image_id: native.id,
            dry_run: false,
            started,
            start_seconds: started.elapsed().as_secs_f64(),
            _lock: lock,
        })
    }

    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn recipe(&self) -> &Recipe {
        &self.ctx.recipe
    }

    pub fn resolved(&self) -> &Resolved {
        &self.ctx
    }

    pub fn cache(&self) -> &Cache {
        &self.ctx.cache
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn shell(&self) -> &'a Shell {
        self.sh
    }

    /// The engine and cache this build's containers run with.
    pub fn host(&self) -> crate::host::Host<'_> {
        crate::host::Host::new(self.sh, &self.engine, &self.ctx.cache)
    }

    pub fn config(&self) -> &BuildConfig {
        &self.config
    }

    /// When the run began: every step's start is measured from here.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Seconds `start` took.
    pub fn start_seconds(&self) -> f64 {
        self.start_seconds
    }

    /// Makes every later stage report its key and whether it is cached instead of running.
    pub fn set_dry_run(&mut self) {
        self.dry_run = true;
    }

    /// Every stage's key, planned as `--dry-run` plans it: nothing runs, and the build runs
    /// as before afterwards.
    pub fn plan_keys(&mut self, ui: &dyn Reporter) -> Result<Stages> {
        let was = std::mem::replace(&mut self.dry_run, true);
        let planned = self.run_all(ui);
        self.dry_run = was;
        planned
    }

    pub fn runner(&self) -> Runner<'_> {
        Runner::new(
            &self.host(),
            self.facts.builder_id.clone(),
            self.facts.arch,
            self.config.jobs,
            self.started,
        )
        .sharing(&self.remotes, self.config.shared_stages.as_ref())
        .planning_only(self.dry_run)
    }

    /// A runner of this build's stages in a helper image made from the builder image with the
    /// packages `apt` (or `dnf` on an rpm base) added (`python-fips-<name>:<key>`), sharing
    /// nothing: the keys of its stages name an image no other machine has.
    pub fn helper_runner(
        &self,
        name: &str,
        apt: Vec<String>,
        dnf: Vec<String>,
        ui: &dyn Reporter,
    ) -> Result<Runner<'_>> {
        let spec = crate::catalog::BuilderSpec {
            base_image: self.facts.builder_id.clone(),
            apt,
            dnf,
        };
        let images = builder::Images::new(&self.host(), &[], true);
        let image_id = images.ensure_image(&spec, name, ui)?;
        let runner = self.runner().sharing(&[], None);
        Ok(runner.in_image(image_id, self.facts.arch))
    }

    /// The builder of the engine's own architecture, which makes a cross build's interpreter.
    fn native_runner(&self) -> Runner<'_> {
        self.runner()
            .in_image(self.native_image_id.clone(), self.facts.build_arch)
    }

    /// What a cross build adds to a stage's environment (nothing for a native build, so that
    /// native keys do not change): the target's triplet and OpenSSL's cross target.
    fn cross_env(&self) -> Vec<(String, String)> {
        let Facts {
            arch, build_arch, ..
        } = &self.facts;
        if !self.facts.cross() {
            return vec![];
        }
        vec![
            env("CROSS_HOST", arch.triplet),
            env("CROSS_BUILD", build_arch.triplet),
            env(
                "OPENSSL_TARGET",
                &format!("{} --cross-compile-prefix={}-", arch.openssl, arch.triplet),
            ),
        ]
    }

    /// The native openssl and python stages of the same recipe, run (or found cached: they are
    /// exactly a native build's) for the interpreter a cross build runs its Python steps with.
    pub fn build_python(&self, ui: &dyn Reporter) -> Result<Vec<Done>> {
        let tools = [graph::Stage::NativeOpenssl, graph::Stage::NativePython];
        let mut done = Stages::new();
        for stage in tools {
            let spec = self.describe(stage, &tools, &done)?;
            let d = self.run_stage(stage, &spec, ui)?;
            done.stages.push((stage, d));
        }
        Ok(done.into_vec())
    }

    /// The stages this build runs, in order (the graph's plan for its shape).
    pub fn plan(&self) -> Vec<graph::Stage> {
        graph::plan(graph::Shape {
            separate_provider: self.ctx.recipe.separate_provider(),
            cross: self.facts.cross(),
        })
    }

    /// The builder a stage runs with: a native tool stage's is the engine's own architecture's.
    pub fn runner_for(&self, stage: graph::Stage) -> Runner<'_> {
        match stage.is_native_tool() {
            true => self.native_runner(),
            false => self.runner(),
        }
    }

    /// Runs `spec`, the description of the graph node `stage`, with that node's builder; its
    /// outcome and its progress lines go by the node's name.
    fn run_stage(&self, stage: graph::Stage, spec: &StageSpec, ui: &dyn Reporter) -> Result<Done> {
        self.runner_for(stage).run_as(spec, stage.name(), ui)
    }

    /// Runs every container stage.
    pub fn run_all(&self, ui: &dyn Reporter) -> Result<Stages> {
        let (stages, _) = self.run_until(None, ui)?;
        Ok(stages)
    }

    /// Runs the stages before `until` and returns that stage's description unrun
    /// (or runs everything when `until` is `None`).
    pub fn run_until(
        &self,
        until: Option<graph::Stage>,
        ui: &dyn Reporter,
    ) -> Result<(Stages, Option<StageSpec>)> {
        if let Some(until) = until
            && !self.plan().contains(&until)
        {
            let names: Vec<&str> = self.plan().iter().map(|s| s.name()).collect();
            bail!(
                "this build has no {until} stage; its stages: {}",
                names.join(", ")
            );
        }
        self.walk(&mut |stage, spec| {
            if until == Some(stage) {
                return Ok(ControlFlow::Break(spec));
            }
            Ok(ControlFlow::Continue(self.run_stage(stage, &spec, ui)?))
        })
    }

    /// Every container stage of this build, described but not run (their deps are
    /// placeholders): what `bench` runs in one container as the floor. Native builds only.
    pub fn stage_plan(&self) -> Result<Vec<StageSpec>> {
        if self.facts.cross() {
            bail!("the floor is measured for native builds only");
        }
        let mut plan = Vec::new();
        self.walk(&mut |stage, spec| {
            let placeholder = Done {
                name: stage.name().into(),
                entry: spec.name.into(),
                key: crate::digest::Digest::unrun(stage.name()),
                cached: false,
                origin: None,
                start: 0.0,
                seconds: 0.0,
                script_seconds: 0.0,
                output: PathBuf::new(),
            };
            plan.push(spec);
            Ok(ControlFlow::Continue(placeholder))
        })?;
        Ok(plan)
    }

    /// Describes each stage of the plan in order, from the outcomes of those it reads, and
    /// hands it to `visit`, which runs it (`Continue` with its outcome) or stops there
    /// (`Break`, returned unrun).
    fn walk(
        &self,
        visit: &mut dyn FnMut(graph::Stage, StageSpec) -> Result<ControlFlow<StageSpec, Done>>,
    ) -> Result<(Stages, Option<StageSpec>)> {
        let plan = self.plan();
        let mut done = Stages::new();
        for &stage in &plan {
            let spec = self.describe(stage, &plan, &done)?;
            match visit(stage, spec)? {
                ControlFlow::Break(spec) => return Ok((done, Some(spec))),
                ControlFlow::Continue(d) => done.stages.push((stage, d)),
            }
        }
        Ok((done, None))
    }

    /// What `stage` runs in a build whose stages are `plan`, given the outcomes of the stages
    /// before it: what it reads comes through the graph's edges.
    fn describe(
        &self,
        stage: graph::Stage,
        plan: &[graph::Stage],
        done: &Stages,
    ) -> Result<StageSpec> {
        use graph::Stage as S;
        let deps = Deps::of(stage, plan, done)?;
        let cross = self.facts.cross();
        Ok(match stage {
            S::Openssl => self.openssl_stage(cross),
            // Keyed exactly as a native build's stages, so they are those stages.
            S::NativeOpenssl => self.openssl_stage(false),
            S::NativePython => self.python_stage(deps.need(S::NativeOpenssl)?, None, false),
            S::FipsProvider => self.provider_stage(),
            S::Python => {
                self.python_stage(deps.need(S::Openssl)?, deps.get(S::NativePython), cross)
            }
            S::Finalize => self.finalize_stage(
                deps.need(S::Python)?,
                deps.get(S::FipsProvider),
                deps.get(S::NativePython),
            ),
        })
    }

    /// The fips-provider stage: the FIPS provider from its own validated release.
    fn provider_stage(&self) -> StageSpec {
        let r = &self.ctx.recipe;
        StageSpec {
            name: "fips-provider",
            script: include_str!("pipeline/fips-provider.sh"),
            files: vec![],
            env: [
                vec![
                    env("PROVIDER_SRC_DIR", &r.fips_provider.tree_dir()),
                    env("PROVIDER_FILE", &r.fips_provider.file),
                ],
                self.cross_env(),
            ]
            .concat(),
            inputs: vec![self.source_input(&r.fips_provider)],
            deps: vec![],
            output: "/out/python-fips",
            source_date_epoch: r.source_date_epoch,
            reuse: true,
        }
    }

    /// The finalize stage over the python stage's output (and the provider's, when separate);
    /// a cross build installs pip here with the native python stage's interpreter.
    fn finalize_stage(
        &self,
        python: &Done,
        provider: Option<&Done>,
        build_python: Option<&Done>,
    ) -> StageSpec {
        let r = &self.ctx.recipe;
        let mut deps = vec![python.clone()];
        deps.extend(provider.cloned());
        let mut finalize = StageSpec {
            name: "finalize",
            script: include_str!("pipeline/finalize.sh"),
            files: vec![(
                "python-fips-setup",
                include_str!("pipeline/python-fips-setup.sh"),
            )],
            env: self.cross_env(),
            inputs: vec![],
            deps,
            output: pipeline::PREFIX,
            source_date_epoch: Some(self.tree.source_date_epoch),
            reuse: false,
        };
        // A cross build installs pip here, with the build interpreter (see cross-pip.sh).
        if let Some(build_python) = build_python {
            finalize
                .files
                .push(("cross-pip.sh", include_str!("pipeline/cross-pip.sh")));
            finalize.env.push(env("PYTHON_MINOR", &r.minor));
            finalize.inputs.push(Input {
                dest: "build-python.tar".into(),
                host: build_python.output.clone(),
                content: build_python.key.to_string(),
            });
        }
        finalize
    }

    /// The openssl stage: libcrypto, libssl and the openssl command (cross-compiled if `cross`).
    fn openssl_stage(&self, cross: bool) -> StageSpec {
        let r = &self.ctx.recipe;
        let same = !r.separate_provider();
        let mut env_vars = vec![
            env("OPENSSL_SRC_DIR", &r.openssl.tree_dir()),
            env("OPENSSL_FILE", &r.openssl.file),
            // The libraries' own fips.so is only built when it is the provider that ships.
            env("OPENSSL_CONFIGURE", if same { "enable-fips" } else { "" }),
            env(
                "OPENSSL_INSTALL_EXTRA",
                if same { "install_fips" } else { "" },
            ),
        ];
        if cross {
            env_vars.extend(self.cross_env());
        }
        StageSpec {
            name: "openssl",
            script: include_str!("pipeline/openssl.sh"),
            files: vec![],
            env: env_vars,
            inputs: vec![self.source_input(&r.openssl)],
            deps: vec![],
            output: pipeline::PREFIX,
            // Its own, from its tarball, unless the recipe pins one (see openssl.sh).
            source_date_epoch: r.source_date_epoch,
            reuse: true,
        }
    }

    /// The python stage over `openssl`'s output; a cross build also gets the native python
    /// stage's output (`build_python`) as its build interpreter.
    fn python_stage(&self, openssl: &Done, build_python: Option<&Done>, cross: bool) -> StageSpec {
        let r = &self.ctx.recipe;
        let mut configure: Vec<&str> = r
            .python_build
            .configure
            .iter()
            .map(|c| c.flag.as_str())
            .collect();
        if r.python_build.pgo {
            configure.push("--enable-optimizations");
        }
        let mut env_vars = vec![
            env("PYTHON_VERSION", &r.python.version),
            env("PYTHON_MINOR", &r.minor),
            env(
                "PYTHON_SHARED",
                if r.python_build.enable_shared {
                    "--enable-shared"
                } else {
                    ""
                },
            ),
            env("PYTHON_CONFIGURE", &configure.join(" ")),
        ];
        let mut inputs = vec![Input {
            dest: format!("src/Python-{}", r.python.version),
            host: self.tree.root.clone(),
            content: self.tree.key.clone(),
        }];
        if cross {
            env_vars.extend(self.cross_env());
            if let Some(done) = build_python {
                inputs.push(Input {
                    dest: "build-python.tar".into(),
                    host: done.output.clone(),
                    content: done.key.to_string(),
                });
            }
        }
        StageSpec {
            name: "python",
            script: include_str!("pipeline/python.sh"),
            files: vec![(
                "compile-stdlib.py",
                include_str!("pipeline/compile-stdlib.py"),
            )],
            env: env_vars,
            inputs,
            deps: vec![openssl.clone()],
            output: pipeline::PREFIX,
            source_date_epoch: Some(self.tree.source_date_epoch),
            reuse: true,
        }
    }

    fn source_input(&self, source: &crate::catalog::Source) -> Input {
        Input {
            dest: format!("src/{}", source.file),
            host: self.ctx.cache.download_path(source),
            content: source.sha256.clone(),
        }
    }
}

/// `python-fips-<python>-openssl-<lib>-fips-<provider>-linux-<arch>`.
fn artifact_name(r: &Recipe, arch: &Arch) -> String {
    let mut name = format!(
        "python-fips-{}-openssl-{}-fips-{}-linux-{}",
        r.python.version, r.openssl.version, r.fips_provider.version, arch.name
    );
    if r.patches.is_empty() {
        name.push_str("-unpatched");
    }
    name
}

/// The patches applied, as `<minor>/<file>` with the sha256 of their bytes.
fn patches(r: &Recipe) -> Result<Vec<sbom::Patch>> {
    (r.patches.iter())
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            Ok(sbom::Patch {
                file: format!("{}/{}", r.minor, file_name(p)),
                sha256: hex(&Sha256::digest(&bytes)),
            })
        })
        .collect()
}

fn env(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::TempDir;

    fn done(node: graph::Stage, entry: &str) -> Done {
        Done {
            name: node.name().into(),
            entry: entry.into(),
            key: crate::digest::Digest::unrun(node.name()),
            cached: true,
            origin: None,
            start: 0.0,
            seconds: 0.0,
            script_seconds: 0.0,
            output: PathBuf::new(),
        }
    }

    #[test]
    fn a_stage_is_given_what_its_graph_edges_name_in_its_build() {
        use graph::Stage as S;
        let cross = graph::plan(graph::Shape {
            separate_provider: true,
            cross: true,
        });
        let mut ran = Stages::new();
        for (stage, entry) in [
            (S::Openssl, "openssl"),
            (S::FipsProvider, "fips-provider"),
            (S::NativeOpenssl, "openssl"),
            (S::NativePython, "python"),
            (S::Python, "python"),
        ] {
            ran.stages.push((stage, done(stage, entry)));
        }
        // The native python stage reads the native openssl stage, cached as `openssl`.
        let deps = Deps::of(S::NativePython, &cross, &ran).unwrap();
        let openssl = deps.need(S::NativeOpenssl).unwrap();
        assert_eq!(
            (openssl.name.as_str(), openssl.entry.as_str()),
            ("native-openssl", "openssl")
        );
        assert!(
            deps.get(S::Openssl).is_none(),
            "not an edge of native-python"
        );
        let finalize = Deps::of(S::Finalize, &cross, &ran).unwrap();
        assert_eq!(finalize.need(S::Python).unwrap().name, "python");
        assert_eq!(finalize.get(S::NativePython).unwrap().name, "native-python");
        assert_eq!(ran.by_name("native-python").unwrap().entry, "python");

        // A native build without a separate provider: finalize reads python only, and a stage
        // its edges name that has not run is an error, not a silent gap.
        let native = graph::plan(graph::Shape {
            separate_provider: false,
            cross: false,
        });
        let finalize = Deps::of(S::Finalize, &native, &ran).unwrap();
        assert!(finalize.get(S::FipsProvider).is_none());
        assert!(finalize.get(S::NativePython).is_none());
        let empty = Stages::new();
        let err = Deps::of(S::Finalize, &native, &empty).err().unwrap();
        assert!(
            err.to_string().contains("the python stage has not run"),
            "{err}"
        );
    }

    #[test]
    fn a_build_looks_for_the_engine_before_fetching_anything() {
        let tmp = TempDir::new("prep-engine");
        let cache_dir = tmp.path().join("cache");
        crate::cache::Cache::open(Some(&cache_dir)).unwrap();
        let args = crate::flags::BuildArgs {
            sources: crate::flags::SourceArgs {
                version: Some("3.13".into()),
                offline: true,
                cache: Some(cache_dir.clone()),
                ..crate::flags::SourceArgs::default()
            },
            engine: Some(tmp.path().join("no-docker-here").display().to_string()),
            ..crate::flags::BuildArgs::default()
        };
        let sh = Shell::new().unwrap();
        let config = BuildConfig::from_args(&args).unwrap();
        let err = match Build::start(&sh, &config, &crate::progress::Silent) {
            Ok(_) => panic!("a build started without an engine"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("no container engine"),
            "the engine was not checked first: {err}"
        );
    }
}
