//! A build: the resolved recipe, its patched tree, the engine and builder image, the stage DAG
//! run through the stage cache, and the package made from its outputs.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::arch::{self, Arch};
use crate::build_info::{self, BuildInfo, Cmvp};
use crate::config::BuildConfig;
use crate::digest::{Key, hex, sha256_file};
use crate::engine::Engine;
use crate::pipeline::{self, Done, Input, Runner, StageSpec};
use crate::prepare::{Resolved, SourceTree, file_name};
use crate::progress::{Reporter, StepEvent};
use crate::store::Remote;
use crate::tarwalk::{self, Compression};
use crate::{builder, graph, package, sbom};

/// A build in progress: the resolved recipe, its patched tree, the engine and the builder image.
pub struct Build<'a> {
    pub ctx: Resolved,
    pub tree: SourceTree,
    pub engine: Engine,
    pub image_id: String,
    /// The target architecture, in the kernel's spelling.
    pub arch: String,
    /// The engine's own architecture, which runs every build step.
    pub build_arch: String,
    /// The target, when it is not the engine's own: the tree is cross-compiled.
    pub cross: Option<&'static Arch>,
    /// The builder image of the engine's own architecture (the cross build's build interpreter
    /// comes from it); `image_id` itself unless cross-compiling.
    pub native_image_id: String,
    /// The shared stage caches (`--cache-registry`), asked after the local cache.
    pub remotes: Vec<Box<dyn Remote + Sync>>,
    pub config: BuildConfig,
    pub sh: &'a Shell,
    /// `--dry-run`: stages report their keys and run nothing.
    pub dry_run: bool,
    /// When the run began (before fetching): every step's start is measured from here.
    pub started: Instant,
    /// Seconds `start` took: resolving, fetching, preparing the tree and the builder image.
    pub start_seconds: f64,
    /// The builder's base image: its id and the content key `base-image` labelled it with.
    pub base_id: String,
    pub base_key: String,
    /// The project checkout this build runs from.
    pub revision: build_info::Revision,
    _lock: crate::cache::CacheLock,
}

/// The stages that ran (or were cached), in order.
pub struct Stages {
    pub stages: Vec<Done>,
}

impl Stages {
    pub fn get(&self, name: &str) -> Option<&Done> {
        self.stages.iter().find(|d| d.name == name)
    }

    /// The outcome of `stage`, which the graph's order guarantees has run.
    pub fn of(&self, stage: graph::Stage) -> Result<&Done> {
        self.get(stage.name()).with_context(|| {
            format!("the {stage} stage has not run before the stages that read it")
        })
    }
}

/// The shipped tarballs (the runtime tree and the development tree), their checksums and the SBOM.
pub struct Artifact {
    pub tarball: PathBuf,
    pub sha256: String,
    /// `<artifact>-dev.tar.gz`, unpacked over the runtime tree.
    pub dev_tarball: PathBuf,
    pub dev_sha256: String,
    pub sbom: PathBuf,
    /// `<artifact>.build-info.json`: the tree's BUILD-INFO.json with each stage's origin in
    /// this run (`store::Origin`), which the tree's own copy cannot hold and stay reproducible.
    pub build_info: PathBuf,
    /// Whether the package step found its output cached.
    pub cached: bool,
}

impl<'a> Build<'a> {
    /// Resolves the recipe, finds the engine, fetches and patches the sources and makes the
    /// builder image.
    pub fn start(sh: &'a Shell, config: &BuildConfig, ui: &dyn Reporter) -> Result<Build<'a>> {
        let started = Instant::now();
        let target = config.target;
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
        crate::host::Host::new(sh, &engine, &ctx.cache).prune_stale()?;
        let build_arch = engine.arch(sh)?;
        let cross = target.filter(|t| t.name != build_arch);
        let remotes = crate::registry::shared_caches(config.cache_registry.as_deref())?;
        let images = builder::Images {
            sh,
            engine: &engine,
            cache: &ctx.cache,
            shared: &remotes,
            make: config.make_builder,
        };
        let native_image_id = images.ensure(&ctx.recipe.builder, ui)?;
        let image_id = match cross {
            Some(target) => {
                arch::parse(&build_arch).with_context(|| {
                    format!("cannot cross-compile for {} on this engine", target.name)
                })?;
                images.ensure_cross(&ctx.recipe.builder, target, ui)?
            }
            None => native_image_id.clone(),
        };
        let base = &ctx.recipe.builder.base_image;
        let base_id = engine.image_id(sh, base)?.unwrap_or_default();
        let base_key = (engine.image_labels(sh, base)?)
            .remove(crate::base_image::LABEL_KEY)
            .unwrap_or_default();
        Ok(Build {
            base_id,
            base_key,
            revision: build_info::Revision::of_checkout(&crate::project_root()),
            ctx,
            tree,
            engine,
            image_id,
            arch: target.map_or(build_arch.clone(), |t| t.name.to_string()),
            build_arch,
            cross,
            native_image_id,
            remotes,
            config: config.clone(),
            sh,
            dry_run: false,
            started,
            start_seconds: started.elapsed().as_secs_f64(),
            _lock: lock,
        })
    }

    pub fn runner(&self) -> Runner<'_> {
        Runner {
            sh: self.sh,
            engine: &self.engine,
            cache: &self.ctx.cache,
            image_id: self.image_id.clone(),
            arch: self.arch.clone(),
            jobs: self.config.jobs,
            reuse: true,
            dry_run: self.dry_run,
            origin: self.started,
            remotes: &self.remotes,
            shared_stages: self.config.shared_stages.as_ref(),
        }
    }

    /// The builder of the engine's own architecture, which makes a cross build's interpreter.
    fn native_runner(&self) -> Runner<'_> {
        Runner {
            image_id: self.native_image_id.clone(),
            arch: self.build_arch.clone(),
            ..self.runner()
        }
    }

    /// What a cross build adds to a stage's environment (nothing for a native build, so that
    /// native keys do not change): the target's triplet and OpenSSL's cross target.
    fn cross_env(&self) -> Vec<(String, String)> {
        let Some(target) = self.cross else {
            return vec![];
        };
        let build = arch::parse(&self.build_arch).map_or("", |a| a.triplet);
        vec![
            env("CROSS_HOST", target.triplet),
            env("CROSS_BUILD", build),
            env(
                "OPENSSL_TARGET",
                &format!(
                    "{} --cross-compile-prefix={}-",
                    target.openssl, target.triplet
                ),
            ),
        ]
    }

    /// The native openssl and python stages of the same recipe, run (or found cached: they are
    /// exactly a native build's) for the interpreter a cross build runs its Python steps with.
    /// Returns them as they ran, named `native-openssl` and `native-python`.
    pub fn build_python(&self, ui: &dyn Reporter) -> Result<Vec<Done>> {
        let mut done = Stages { stages: Vec::new() };
        for stage in [graph::Stage::NativeOpenssl, graph::Stage::NativePython] {
            let spec = self.describe(stage, &done)?;
            let mut d = self.runner_for(stage).run(&spec, ui)?;
            d.name = stage.name().into();
            done.stages.push(d);
        }
        Ok(done.stages)
    }

    /// The stages this build runs, in order (the graph's plan for its shape).
    pub fn plan(&self) -> Vec<graph::Stage> {
        graph::plan(graph::Shape {
            separate_provider: self.ctx.recipe.separate_provider(),
            cross: self.cross.is_some(),
        })
    }

    /// The builder a stage runs with: a native tool stage's is the engine's own architecture's.
    pub fn runner_for(&self, stage: graph::Stage) -> Runner<'_> {
        match stage.is_native_tool() {
            true => self.native_runner(),
            false => self.runner(),
        }
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
            Ok(ControlFlow::Continue(
                self.runner_for(stage).run(&spec, ui)?,
            ))
        })
    }

    /// Every container stage of this build, described but not run (their deps are
    /// placeholders): what `bench` runs in one container as the floor. Native builds only.
    pub fn stage_plan(&self) -> Result<Vec<StageSpec>> {
        if self.cross.is_some() {
            bail!("the floor is measured for native builds only");
        }
        let mut plan = Vec::new();
        self.walk(&mut |stage, spec| {
            let placeholder = Done {
                name: stage.name().into(),
                key: format!("unrun-{stage}"),
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
        let mut done = Stages { stages: Vec::new() };
        for stage in self.plan() {
            let spec = self.describe(stage, &done)?;
            match visit(stage, spec)? {
                ControlFlow::Break(spec) => return Ok((done, Some(spec))),
                ControlFlow::Continue(mut d) => {
                    // A native tool stage is keyed and cached as a native build's own stage,
                    // and named as the node it is here.
                    d.name = stage.name().into();
                    done.stages.push(d);
                }
            }
        }
        Ok((done, None))
    }

    /// What `stage` runs, given the outcomes of the stages before it.
    fn describe(&self, stage: graph::Stage, done: &Stages) -> Result<StageSpec> {
        let r = &self.ctx.recipe;
        let cross = self.cross.is_some();
        Ok(match stage {
            graph::Stage::Openssl => self.openssl_stage(cross),
            graph::Stage::NativeOpenssl => self.openssl_stage(false),
            graph::Stage::FipsProvider => StageSpec {
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
            },
            graph::Stage::NativePython => {
                // Keyed exactly as a native build's python stage, so it is that stage: its
                // dependency goes by the name it has there (a dependency's name is in the key).
                let mut openssl = done.of(graph::Stage::NativeOpenssl)?.clone();
                openssl.name = graph::Stage::Openssl.name().into();
                self.python_stage(&openssl, None, false)
            }
            graph::Stage::Python => self.python_stage(
                done.of(graph::Stage::Openssl)?,
                done.get(graph::Stage::NativePython.name()),
                cross,
            ),
            graph::Stage::Finalize => self.finalize_stage(
                done.of(graph::Stage::Python)?,
                done.get(graph::Stage::FipsProvider.name()),
                done.get(graph::Stage::NativePython.name()),
            ),
        })
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
                content: build_python.key.clone(),
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
                    content: done.key.clone(),
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

    /// `python-fips-<python>-openssl-<lib>-fips-<provider>-linux-<arch>`.
    pub fn artifact_name(&self) -> String {
        let r = &self.ctx.recipe;
        let mut name = format!(
            "python-fips-{}-openssl-{}-fips-{}-linux-{}",
            r.python.version, r.openssl.version, r.fips_provider.version, self.arch
        );
        if r.patches.is_empty() {
            name.push_str("-unpatched");
        }
        name
    }

    pub fn out_dir(&self) -> PathBuf {
        self.config.out.clone()
    }

    /// The package stage: BUILD-INFO.json, the SBOM and two deterministic tarballs (the runtime
    /// tree and the development tree), cached by key, copied to the output directory with a
    /// `.sha256` each and the SBOM (`.cdx.json`) beside them.
    pub fn package(&self, done: &Stages, ui: &dyn Reporter) -> Result<Artifact> {
        let finalize = done.of(graph::Stage::Finalize)?;
        let info = self.build_info(done)?.to_json()?;
        let artifact = self.artifact_name();
        let mut sbom_input = self.sbom(&artifact, ui)?;
        let started = std::time::Instant::now();
        let key = Key::new()
            .set("stage", "package")
            .set_sha256("code", include_str!("package.rs"))
            .set("dep:finalize", finalize.key.clone())
            .set_sha256("build-info", &info)
            // The SBOM without the tarballs' hashes (outputs of this step) and without the
            // shipped files' hashes: those come from the finalize output, which `dep:finalize`
            // already keys, so a cached package never reads that output.
            .set_sha256("sbom", serde_json::to_vec(&sbom::cyclonedx(&sbom_input))?)
            .hex();
        let name = format!("{artifact}.tar.gz");
        let dev_name = format!("{artifact}-dev.tar.gz");
        let sbom_name = format!("{artifact}.cdx.json");
        let entry = self.runner().entry("package", &key);
        let cached = entry.join(&sbom_name).is_file();
        if !cached {
            let wanted: Vec<String> = sbom::shipped_files(&self.ctx.recipe)
                .into_iter()
                .map(|(_, p)| p)
                .collect();
            sbom_input.files = package::sha256_of_entries(&finalize.output, &wanted)?;
            let scratch = self.ctx.cache.scratch("package")?;
            let tree = package::Tree::read(&finalize.output)?;
            let epoch = self.tree.source_date_epoch;
            tree.write(package::Part::Dev, &[], epoch, &scratch.join(&dev_name))?;
            let dev_sha256 = sha256_file(&scratch.join(&dev_name))?;
            sbom_input.tarballs = Some(sbom::Tarballs {
                runtime: name.clone(),
                dev: dev_name.clone(),
                dev_sha256: dev_sha256.clone(),
            });
            let mut bom = sbom::cyclonedx(&sbom_input);
            tree.write(
                package::Part::Runtime,
                &[
                    ("BUILD-INFO.json", &info),
                    (SBOM_IN_TREE, &serde_json::to_vec_pretty(&bom)?),
                ],
                epoch,
                &scratch.join(&name),
            )?;
            let sha256 = sha256_file(&scratch.join(&name))?;
            sbom::add_runtime_sha256(&mut bom, &sha256);
            let sbom_file = scratch.join(&sbom_name);
            std::fs::write(&sbom_file, serde_json::to_vec_pretty(&bom)?)
                .with_context(|| format!("cannot write {}", sbom_file.display()))?;
            let sums_file = scratch.join(SUMS);
            std::fs::write(
                &sums_file,
                format!("{sha256}  {name}\n{dev_sha256}  {dev_name}\n"),
            )
            .with_context(|| format!("cannot write {}", sums_file.display()))?;
            crate::cache::publish(&scratch, &entry)?;
        }
        let out = self.out_dir();
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        let sums = std::fs::read_to_string(entry.join(SUMS)).unwrap_or_default();
        let mut shipped = Vec::new();
        for file in [&name, &dev_name] {
            // The entry's own record of its sha256, or (an entry made before it kept one) the hash.
            let sha256 = match sums
                .lines()
                .find_map(|l| l.strip_suffix(&format!("  {file}")))
            {
                Some(sha256) => sha256.to_string(),
                None => sha256_file(&entry.join(file))?,
            };
            ship(&entry.join(file), &out.join(file))?;
            write_if_changed(
                &out.join(format!("{file}.sha256")),
                format!("{sha256}  {file}\n").as_bytes(),
            )?;
            shipped.push((out.join(file), sha256));
        }
        // Beside the tarball, unlike in it: where each stage came from in this run.
        let provenance: Vec<(String, String)> = (done.stages.iter())
            .filter_map(|d| Some((d.name.clone(), d.origin.as_ref()?.describe())))
            .collect();
        let sbom_path = out.join(&sbom_name);
        let bom = std::fs::read(entry.join(&sbom_name))
            .with_context(|| format!("cannot read {}", entry.join(&sbom_name).display()))?;
        let mut bom: serde_json::Value = serde_json::from_slice(&bom)
            .with_context(|| format!("{} is not JSON", entry.join(&sbom_name).display()))?;
        sbom::add_provenance(&mut bom, &provenance);
        write_if_changed(&sbom_path, &serde_json::to_vec_pretty(&bom)?)?;
        let build_info_path = out.join(format!("{artifact}.build-info.json"));
        let mut beside: serde_json::Value = serde_json::from_slice(&info)?;
        for stage in beside["stages"].as_array_mut().into_iter().flatten() {
            let origin = done.get(stage["name"].as_str().unwrap_or_default());
            if let Some(origin) = origin.and_then(|d| d.origin.as_ref()) {
                stage["origin"] = serde_json::to_value(origin)?;
            }
        }
        write_if_changed(&build_info_path, &serde_json::to_vec_pretty(&beside)?)?;
        let seconds = started.elapsed().as_secs_f64();
        if cached {
            ui.step("package", StepEvent::Skipped { what: "cached" });
        } else {
            ui.step(
                "package",
                StepEvent::Ran {
                    seconds,
                    note: None,
                },
            );
        }
        let (dev, runtime) = (shipped.pop().unwrap(), shipped.pop().unwrap());
        Ok(Artifact {
            tarball: runtime.0,
            sha256: runtime.1,
            dev_tarball: dev.0,
            dev_sha256: dev.1,
            sbom: sbom_path,
            build_info: build_info_path,
            cached,
        })
    }

    /// The patches applied, as `<minor>/<file>` with the sha256 of their bytes.
    fn patches(&self) -> Result<Vec<sbom::Patch>> {
        let r = &self.ctx.recipe;
        r.patches
            .iter()
            .map(|p| {
                let bytes =
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
                Ok(sbom::Patch {
                    file: format!("{}/{}", r.minor, file_name(p)),
                    sha256: hex(&Sha256::digest(&bytes)),
                })
            })
            .collect()
    }

    /// The packages installed in the builder image, listed once per image by a small stage.
    fn builder_packages(&self, ui: &dyn Reporter) -> Result<Vec<sbom::Package>> {
        let stage = StageSpec {
            name: "packages",
            script: include_str!("pipeline/packages.sh"),
            env: vec![],
            inputs: vec![],
            deps: vec![],
            files: vec![],
            output: "/out/packages",
            source_date_epoch: None,
            reuse: false,
        };
        let done = self.runner().run(&stage, ui)?;
        let found = tarwalk::for_each_entry(&done.output, Compression::None, |path, entry| {
            if !Path::new(path).ends_with("packages.tsv") {
                return Ok(None);
            }
            let mut text = String::new();
            std::io::Read::read_to_string(entry, &mut text)?;
            Ok(Some(text))
        })?;
        if let Some(text) = found {
            return Ok(sbom::parse_packages(&text));
        }
        anyhow::bail!(
            "the packages stage wrote no packages.tsv; see its log under {}",
            self.ctx.cache.dir("logs").display()
        )
    }

    /// What the CycloneDX SBOM of the tree that `finalize` produced says, but the tarballs.
    /// The shipped files' hashes are left empty: `package` fills them in when it writes.
    fn sbom<'s>(&'s self, artifact: &'s str, ui: &dyn Reporter) -> Result<sbom::Input<'s>> {
        let r = &self.ctx.recipe;
        let input = sbom::Input {
            artifact,
            recipe: r,
            patches: self.patches()?,
            builder: sbom::BuilderImage {
                base_image: r.builder.base_image.clone(),
                id: self.image_id.clone(),
                packages: self.builder_packages(ui)?,
            },
            files: Default::default(),
            arch: &self.arch,
            source_date_epoch: self.tree.source_date_epoch,
            reproducible: !r.python_build.pgo,
            tarballs: None,
        };
        Ok(input)
    }

    fn build_info(&self, done: &Stages) -> Result<BuildInfo> {
        let r = &self.ctx.recipe;
        let source = |s: &crate::catalog::Source| build_info::Source {
            version: s.version.clone(),
            file: s.file.clone(),
            sha256: s.sha256.clone(),
            license: s.license.clone(),
            carries: s.carries.as_ref().map(|c| build_info::Carried {
                release: c.release.clone(),
                what: c.what.clone(),
            }),
        };
        let patches = self
            .patches()?
            .into_iter()
            .map(|p| build_info::Patch {
                file: p.file,
                sha256: p.sha256,
            })
            .collect();
        // The certificate's status on the build's date (SOURCE_DATE_EPOCH), as the SBOM gives it.
        let day = crate::date::day_of(self.tree.source_date_epoch);
        let cmvp = match &r.fips_provider.cmvp {
            Some(c) => Cmvp::Validated(build_info::Certificate {
                certificate: c.certificate.clone(),
                standard: c.standard.clone(),
                historical_from: c.historical_from.clone(),
                status: r.fips_provider.cmvp_status(&day).as_str().to_string(),
                status_as_of: day,
            }),
            None => Cmvp::NotValidated,
        };
        Ok(BuildInfo {
            python: source(&r.python),
            openssl: source(&r.openssl),
            fips_provider: build_info::FipsProvider {
                source: source(&r.fips_provider),
                cmvp,
            },
            patches,
            configure: build_info::Configure {
                python: (r.python_build.configure.iter())
                    .map(|f| build_info::ConfigureFlag {
                        flag: f.flag.clone(),
                        why: f.why.clone(),
                    })
                    .collect(),
                enable_shared: r.python_build.enable_shared,
                pgo: r.python_build.pgo,
            },
            builder_image: build_info::BuilderImage {
                base: r.builder.base_image.clone(),
                id: self.image_id.clone(),
                base_id: self.base_id.clone(),
                base_key: self.base_key.clone(),
            },
            arch: self.arch.clone(),
            build_arch: self.build_arch.clone(),
            source_date_epoch: self.tree.source_date_epoch,
            reproducible: !r.python_build.pgo,
            sbom: SBOM_IN_TREE.to_string(),
            stages: (done.stages.iter())
                .map(|d| build_info::StageKey {
                    name: d.name.clone(),
                    key: d.key.clone(),
                })
                .collect(),
            revision: self.revision.clone(),
        })
    }
}

/// The package entry's record of its tarballs' sha256s, in `sha256sum` format.
const SUMS: &str = "SHA256SUMS";

/// Copies the cached file `from` to `to` (through a synced temporary file and a rename), unless
/// `to` already holds the same bytes: a no-op run rewrites nothing in the output directory.
fn ship(from: &Path, to: &Path) -> Result<()> {
    if same_bytes(from, to)? {
        return Ok(());
    }
    let name = to.file_name().unwrap_or_default().to_string_lossy();
    let tmp = to.with_file_name(format!(".{name}.partial"));
    std::fs::copy(from, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    crate::cache::sync(&tmp)?;
    std::fs::rename(&tmp, to)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), to.display()))?;
    crate::cache::sync(to.parent().unwrap_or(to))
}

/// `write_atomic`, unless `path` already holds exactly `bytes`.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|have| have == bytes) {
        return Ok(());
    }
    crate::cache::write_atomic(path, bytes)
}

/// Whether the regular file `b` exists and has the same bytes as `a`.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (Ok(meta_a), Ok(meta_b)) = (std::fs::metadata(a), std::fs::symlink_metadata(b)) else {
        return Ok(false);
    };
    if !meta_b.is_file() || meta_a.len() != meta_b.len() {
        return Ok(false);
    }
    let open =
        |p: &Path| std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1])? == 0);
        }
        // A file that shrank under us is simply not the same.
        if fb.read_exact(&mut bb[..n]).is_err() || ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Where the SBOM goes inside the tree, next to BUILD-INFO.json.
pub const SBOM_IN_TREE: &str = "SBOM.cdx.json";

fn env(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::TempDir;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn shipping_an_unchanged_file_again_rewrites_nothing() {
        let dir = TempDir::new("ship");
        let from = dir.path().join("entry.tar.gz");
        let to = dir.path().join("dist.tar.gz");
        std::fs::write(&from, vec![7u8; 3 << 20]).unwrap();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());
        let inode = std::fs::metadata(&to).unwrap().ino();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::metadata(&to).unwrap().ino(), inode, "rewritten");
        // A changed byte at the end, or another length: replaced.
        let mut bytes = std::fs::read(&from).unwrap();
        *bytes.last_mut().unwrap() = 8;
        std::fs::write(&to, &bytes).unwrap();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());
        std::fs::write(&to, b"short").unwrap();
        ship(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), std::fs::read(&from).unwrap());

        let sums = dir.path().join("x.sha256");
        write_if_changed(&sums, b"a  x\n").unwrap();
        let inode = std::fs::metadata(&sums).unwrap().ino();
        write_if_changed(&sums, b"a  x\n").unwrap();
        assert_eq!(std::fs::metadata(&sums).unwrap().ino(), inode);
        write_if_changed(&sums, b"b  x\n").unwrap();
        assert_eq!(std::fs::read(&sums).unwrap(), b"b  x\n");
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
