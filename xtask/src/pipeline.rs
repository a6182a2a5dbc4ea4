//! Build stages: what a stage is made of, its content key, and running it in a fresh container.
//!
//! A stage's key is the sha256 of everything that can change its output. Its output appears
//! in `cache/stages/<stage>-<key>/` only by rename, so the presence of that directory is the
//! cache hit, and a run killed at any moment leaves nothing a later run would trust.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::cache::{self, Cache};
use crate::digest::{Digest, Key};
// The encoding under `Key::hex`, which the key tests call on maps of their own.
#[cfg(test)]
use crate::digest::key_of;
use crate::engine::{Container, ContainerSpec, Engine};
use crate::host::{Host, Scratch, Step};
use crate::progress::{Reporter, StepEvent};
use crate::store::{Origin, Remote, StageCache};

/// Where the tree is installed, inside every container and on the machines that run it.
pub const PREFIX: &str = "/opt/python-fips";

/// One input file or directory placed under `/build` in the stage's container.
#[derive(Debug, Clone)]
pub struct Input {
    /// Path below `/build`, e.g. `src/openssl-3.5.7.tar.gz`.
    pub dest: String,
    pub host: PathBuf,
    /// What identifies the content: a sha256 of the file, or the key of a prepared tree.
    pub content: String,
}

/// A stage, fully described: nothing outside this struct can change its output.
#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: &'static str,
    pub script: &'static str,
    /// Further files the tool carries (path below `/build`, text); part of the key.
    pub files: Vec<(&'static str, &'static str)>,
    /// Environment the script reads; all of it is part of the key.
    pub env: Vec<(String, String)>,
    pub inputs: Vec<Input>,
    /// Earlier stages whose outputs are unpacked at /opt before the script runs.
    pub deps: Vec<Done>,
    /// The directory copied out as the stage's output.
    pub output: &'static str,
    /// `SOURCE_DATE_EPOCH` for the script, part of the key. `None`: the script derives its own
    /// from the sources it unpacks (the OpenSSL stages), so its key holds no other source's date.
    pub source_date_epoch: Option<u64>,
    /// The stage may reuse what its earlier runs left (see `Runner::reuse`): it compiles C.
    pub reuse: bool,
}

/// A finished (or cached) stage.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// The name the stage is reported and recorded under: its graph node (`native-python`).
    pub name: String,
    /// The name of its cache entry and of its output in the keys of the stages that read it:
    /// a native tool stage is cached as the native build's own stage (`python`).
    #[serde(skip)]
    pub entry: String,
    pub key: Digest,
    pub cached: bool,
    /// Where its output came from (none under `--dry-run`, where nothing ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// When the stage began, in seconds since the run began (`Runner::origin`).
    pub start: f64,
    /// Wall time of the whole stage: container creation, copies, the script, publishing.
    pub seconds: f64,
    /// Time the stage script itself ran; `seconds` minus this is the orchestration overhead.
    pub script_seconds: f64,
    #[serde(skip)]
    pub output: PathBuf,
}

/// What `meta.json` of a stage entry records.
#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    pub stage: String,
    pub key: String,
    pub inputs: BTreeMap<String, String>,
    pub seconds: f64,
    pub script_seconds: f64,
    pub log: PathBuf,
}

/// The container a failed stage left behind, recorded for `shell --failed`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Failed {
    pub stage: String,
    pub container: String,
    pub image: String,
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
}

/// The fixed facts every stage of one build shares.
pub struct Runner<'a> {
    sh: &'a Shell,
    engine: &'a Engine,
    cache: &'a Cache,
    /// Image id (not tag) of the builder, so a rebuilt builder changes every key.
    image_id: String,
    /// The architecture its stages build for.
    arch: &'static crate::arch::Arch,
    jobs: usize,
    /// Carry a reuse directory through the stages that compile: `cache/reuse/<stage>-<arch>-
    /// <builder image>.tar`, unpacked at `/reuse` before the script and replaced from it after a
    /// success. It holds ccache's cache (`/reuse/ccache`), the python stage's configure results
    /// (`/reuse/configure`) and its standard library bytecode parts (`/reuse/pyc`), and is
    /// outside every key: what a stage takes from it gives the bytes it would have made without.
    reuse: bool,
    /// Run nothing: `run` returns each stage's key and whether it is cached (`--dry-run`).
    dry_run: bool,
    /// When the run began: each `Done::start` is measured from here.
    origin: Instant,
    /// The shared stage caches asked after the local one (`--cache-registry`).
    remotes: &'a [Box<dyn Remote + Sync>],
    /// The only stages the shared caches are asked for and given (`None`: every stage):
    /// `rebuild` takes just these and recompiles the rest.
    shared_stages: Option<&'a std::collections::BTreeSet<String>>,
}

impl<'a> Runner<'a> {
    /// A runner of stages in the builder image `image_id` for `arch` with `jobs` compilers,
    /// timed from `origin`. It carries the reuse directory, runs what it is given and shares
    /// nothing until `sharing` names the shared caches.
    pub fn new(
        host: &crate::host::Host<'a>,
        image_id: String,
        arch: &'static crate::arch::Arch,
        jobs: usize,
        origin: Instant,
    ) -> Runner<'a> {
        Runner {
            sh: host.shell(),
            engine: host.engine(),
            cache: host.cache(),
            image_id,
            arch,
            jobs,
            reuse: true,
            dry_run: false,
            origin,
            remotes: &[],
            shared_stages: None,
        }
    }

    /// Asks `remotes` after the local cache and gives them what it builds; only the stages
    /// in `only` when it is given.
    pub fn sharing(
        self,
        remotes: &'a [Box<dyn Remote + Sync>],
        only: Option<&'a std::collections::BTreeSet<String>>,
    ) -> Runner<'a> {
        Runner {
            remotes,
            shared_stages: only,
            ..self
        }
    }

    /// With `on`, runs nothing: `run` reports each stage's key and whether it is cached.
    pub fn planning_only(self, on: bool) -> Runner<'a> {
        Runner {
            dry_run: on,
            ..self
        }
    }

    /// The same runner with the stages run in the image `image_id` for `arch`.
    pub fn in_image(self, image_id: String, arch: &'static crate::arch::Arch) -> Runner<'a> {
        Runner {
            image_id,
            arch,
            ..self
        }
    }
}

/// Where the reuse directory lives in a stage's container.
const REUSE_DIR: &str = "/reuse";

impl StageSpec {
    /// Every input of the stage with the content that identifies it: its content key.
    pub fn content_key(&self, builder: &Runner) -> Key {
        let mut key = Key::new();
        key.set("stage", self.name)
            .set_sha256("script", self.script)
            .set("builder-image", builder.image_id.clone())
            .set("arch", builder.arch.name)
            .set("output", self.output);
        for (k, v) in self.env(builder) {
            if !outside_key(&k) {
                key.set(format!("env:{k}"), v);
            }
        }
        for (dest, text) in self.carried_files() {
            key.set_sha256(format!("file:{dest}"), text);
        }
        for i in &self.inputs {
            key.set(format!("input:{}", i.dest), i.content.clone());
        }
        for d in &self.deps {
            key.set(format!("dep:{}", d.entry), d.key.clone());
        }
        key
    }

    /// The inputs of `content_key` by name, in a stable order.
    pub fn key_inputs(&self, builder: &Runner) -> BTreeMap<String, String> {
        self.content_key(builder).into_inputs()
    }

    pub fn key(&self, builder: &Runner) -> Digest {
        self.content_key(builder).digest()
    }

    /// The environment the script runs with (the recipe's fields plus the build's fixed facts).
    /// `JOBS` and the compiler cache's variables are left out of the key (`outside_key`):
    /// neither changes the output.
    pub fn env(&self, builder: &Runner) -> Vec<(String, String)> {
        let mut env = vec![
            ("PREFIX".to_string(), PREFIX.to_string()),
            ("JOBS".to_string(), builder.jobs.to_string()),
            ("LC_ALL".to_string(), "C".to_string()),
            ("TZ".to_string(), "UTC".to_string()),
        ];
        if let Some(epoch) = self.source_date_epoch {
            env.push(("SOURCE_DATE_EPOCH".to_string(), epoch.to_string()));
        }
        if self.reuses(builder) {
            env.push(("REUSE_DIR".to_string(), REUSE_DIR.to_string()));
            env.push(("CCACHE_DIR".to_string(), format!("{REUSE_DIR}/ccache")));
            env.push(("CCACHE_MAXSIZE".to_string(), "1G".to_string()));
        }
        env.extend(self.env.iter().cloned());
        env
    }

    fn reuses(&self, builder: &Runner) -> bool {
        self.reuse && builder.reuse
    }

    /// The files the tool carries into the container: the stage's own and, for a stage that
    /// compiles, `ccache.sh`, which its script sources.
    fn carried_files(&self) -> Vec<(&'static str, &'static str)> {
        let mut files = self.files.clone();
        if self.reuse {
            files.push(("ccache.sh", include_str!("pipeline/ccache.sh")));
        }
        files
    }
}

/// Environment variables that cannot change a stage's output and so stay out of its key.
fn outside_key(name: &str) -> bool {
    name == "JOBS" || name == "REUSE_DIR" || name.starts_with("CCACHE_")
}

impl Runner<'_> {
    pub fn entry(&self, name: &str, key: &str) -> PathBuf {
        self.stage_cache(name).entry(name, key)
    }

    /// The stage cache this builder reads and fills for the stage `name`.
    fn stage_cache(&self, name: &str) -> StageCache<'_> {
        let shared = self.shared_stages.is_none_or(|only| only.contains(name));
        StageCache::new(self.cache, if shared { self.remotes } else { &[] })
    }

    /// Runs `stage` unless its output is cached.
    pub fn run(&self, stage: &StageSpec, ui: &dyn Reporter) -> Result<Done> {
        self.run_as(stage, stage.name, ui)
    }

    /// Runs `stage` unless its output is cached, reporting it as `node` (its graph node, which
    /// differs from its entry's name for a native tool stage).
    pub fn run_as(&self, stage: &StageSpec, node: &str, ui: &dyn Reporter) -> Result<Done> {
        let start = self.origin.elapsed().as_secs_f64();
        let key = stage.key(self);
        let entry = self.entry(stage.name, &key);
        let found = match self.dry_run {
            // A dry run looks only at the local cache: it moves nothing.
            true => entry.join("output.tar").is_file().then_some(Origin::Local),
            false => self.stage_cache(node).lookup(stage.name, &key, ui)?,
        };
        let unrun = |cached: bool, origin: Option<Origin>| Done {
            name: node.into(),
            entry: stage.name.into(),
            key: key.clone(),
            cached,
            origin,
            start,
            seconds: 0.0,
            script_seconds: 0.0,
            output: entry.join("output.tar"),
        };
        if let Some(origin) = found {
            let what = match &origin {
                Origin::Remote { remote, digest } => format!("pulled from {remote} ({digest})"),
                _ => "cached".to_string(),
            };
            ui.step(node, StepEvent::Skipped { what: &what });
            return Ok(unrun(true, Some(origin)));
        }
        if self.dry_run {
            let what = format!("would run (key {})", key.short());
            ui.step(node, StepEvent::Skipped { what: &what });
            return Ok(unrun(false, None));
        }
        let started = Instant::now();
        let (scratch, seconds, script_seconds) = self.execute(stage, node, &key, started, ui)?;
        let entry = self
            .stage_cache(node)
            .publish(stage.name, &key, scratch.path(), ui)?;
        scratch.published();
        ui.step(
            node,
            StepEvent::Ran {
                seconds,
                note: None,
            },
        );
        Ok(Done {
            seconds,
            script_seconds,
            origin: Some(Origin::Ran),
            output: entry.join("output.tar"),
            ..unrun(false, None)
        })
    }

    /// Runs the script of `stage` (keyed `key`, shown as `node`) in a fresh container and
    /// leaves its entry, `output.tar` and `meta.json`, in a scratch directory; returns it with
    /// the stage's seconds and its script's. A failed stage's container stays for `shell --failed`.
    fn execute(
        &self,
        stage: &StageSpec,
        node: &str,
        key: &Digest,
        started: Instant,
        ui: &dyn Reporter,
    ) -> Result<(Scratch, f64, f64)> {
        let short = key.short();
        let host = self.host();
        let log = host.stamped_log(&format!("{}-{short}", stage.name));
        let env = stage.env(self);
        let reuse = stage.reuses(self).then(|| self.reuse_entry(stage.name));
        let step = Step {
            name: node,
            doing: "running",
            log: &log,
            exit_fails: true,
        };
        let spec = self.stage_spec(stage, &format!("{}-{short}", stage.name), &env, false);
        let mut script_started = Instant::now();
        let put = |container: &Container| -> Result<()> {
            self.send_inputs(stage, container)?;
            if let Some(entry) = reuse.as_deref().filter(|e| e.is_file()) {
                put_reuse(stage.name, container, entry)?;
            }
            script_started = Instant::now();
            Ok(())
        };
        let ran = host
            .run_step(&step, &spec, put, |_| {}, ui)
            .with_context(|| format!("cannot run stage {}", stage.name))?;
        let script_seconds = script_started.elapsed().as_secs_f64();
        if !ran.ok {
            let seconds = started.elapsed().as_secs_f64();
            return Err(self.failure(stage, &ran.container.keep(), &env, &log, seconds));
        }
        let container = ran.container;
        let scratch = host.scratch(stage.name)?;
        let out_tar = scratch.join("output.tar");
        {
            let mut file = std::fs::File::create(&out_tar)
                .with_context(|| format!("cannot create {}", out_tar.display()))?;
            container.copy_out(stage.output, &mut file)?;
            file.sync_all()
                .with_context(|| format!("cannot sync {}", out_tar.display()))?;
        }
        if let Some(entry) = &reuse {
            self.keep_reuse(stage.name, &container, entry, ui);
        }
        drop(container);
        let seconds = started.elapsed().as_secs_f64();
        let meta = Meta {
            stage: stage.name.into(),
            key: key.to_string(),
            inputs: stage.key_inputs(self),
            seconds,
            script_seconds,
            log,
        };
        let meta_file = scratch.join("meta.json");
        std::fs::write(&meta_file, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("cannot write {}", meta_file.display()))?;
        Ok((scratch, seconds, script_seconds))
    }

    /// `cache/reuse/<stage>-<arch>-<builder image>.tar`: one reuse directory per builder image,
    /// architecture and stage, as nothing else could share what is in it.
    pub fn reuse_entry(&self, stage: &str) -> PathBuf {
        let image = self.image_id.trim_start_matches("sha256:");
        let image = &image[..image.len().min(16)];
        self.cache
            .dir("reuse")
            .join(format!("{stage}-{}-{image}.tar", self.arch.name))
    }

    /// Replaces `entry` with the container's reuse directory, by rename. A failure costs the
    /// next run its reuse, not its result, so it is reported and the stage goes on.
    fn keep_reuse(&self, stage: &str, container: &Container, entry: &Path, ui: &dyn Reporter) {
        let kept = (|| -> Result<()> {
            let scratch = self.host().scratch("reuse")?;
            let tar = scratch.join("reuse.tar");
            let mut file = std::fs::File::create(&tar)
                .with_context(|| format!("cannot create {}", tar.display()))?;
            container.copy_out(REUSE_DIR, &mut file)?;
            file.sync_all()
                .with_context(|| format!("cannot sync {}", tar.display()))?;
            let parent = entry.parent().unwrap_or(entry);
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            std::fs::rename(&tar, entry).with_context(|| {
                format!("cannot rename {} to {}", tar.display(), entry.display())
            })?;
            cache::sync(parent)?;
            scratch.remove()
        })();
        if let Err(e) = kept {
            ui.message(&format!(
                "warning: the reuse directory of stage {} was not kept ({e:#}); the next run starts without it",
                stage
            ));
        }
    }

    /// Runs the scripts of `stages` one after the other in one container of the builder image,
    /// with each stage's own environment plus `extra_env`: no keys, no cache, no copies of
    /// outputs between stages (a stage whose output is not `PREFIX` has it merged into `PREFIX`
    /// in place, as unpacking its output would). Nothing is kept. This is the floor `bench`
    /// compares the orchestrated build with; returns each script's time and the total.
    pub fn run_together(
        &self,
        stages: &[StageSpec],
        extra_env: &[(String, String)],
        ui: &dyn Reporter,
    ) -> Result<Together> {
        let started = Instant::now();
        let host = self.host();
        let log = host.stamped_log("floor");
        let mut spec = ContainerSpec {
            workdir: Some("/build".into()),
            command: vec![
                "sh".into(),
                "-c".into(),
                "exec sh -eu /build/floor/run.sh 2>&1".into(),
            ],
            ..host.spec("floor", &self.image_id)
        };
        spec.labels
            .push(("python-fips.stage".into(), "floor".into()));
        let step = Step {
            name: "floor",
            doing: "running all stages in one container",
            log: &log,
            exit_fails: true,
        };
        let put = |container: &Container| {
            container.copy_in("/", |w| self.floor_inputs(w, stages, extra_env))
        };
        let mut marks = Vec::new();
        let on_line = |line: &str| marks.extend(parse_mark(line));
        host.run_step(&step, &spec, put, on_line, ui)
            .context("cannot run the floor")?
            .succeeded("the floor (all stage scripts in one container)", 30, None)?;
        let scripts = script_times(&marks);
        let seconds = started.elapsed().as_secs_f64();
        ui.step(
            "floor",
            StepEvent::Ran {
                seconds,
                note: None,
            },
        );
        Ok(Together { scripts, seconds })
    }

    /// The floor's driver, scripts, carried files and inputs, as a tar stream into `w`.
    fn floor_inputs(
        &self,
        w: &mut dyn std::io::Write,
        stages: &[StageSpec],
        extra_env: &[(String, String)],
    ) -> Result<()> {
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        // The floor compiles without a reuse directory: nothing from earlier runs.
        let driver = together_script(stages, |s| {
            let own = s
                .env(self)
                .into_iter()
                .filter(|(k, _)| !outside_key(k) || k == "JOBS");
            own.chain(extra_env.iter().cloned()).collect()
        });
        add_bytes(&mut tar, "build/floor/run.sh", driver.as_bytes(), 0o755)?;
        for stage in stages {
            let script = format!("build/floor/{}.sh", stage.name);
            add_bytes(&mut tar, &script, stage.script.as_bytes(), 0o755)?;
            for (dest, text) in stage.carried_files() {
                add_bytes(&mut tar, &format!("build/{dest}"), text.as_bytes(), 0o755)?;
            }
            append_inputs(&mut tar, stage)?;
        }
        tar.finish()?;
        Ok(())
    }

    /// The shell, engine and cache the stages run with.
    pub fn host(&self) -> Host<'_> {
        Host::new(self.sh, self.engine, self.cache)
    }

    /// Creates a container `python-fips-<what>-<pid>` from the builder image holding exactly the
    /// stage's inputs; it is removed when the returned guard is dropped.
    pub fn create_with_inputs(
        &self,
        stage: &StageSpec,
        what: &str,
        env: &[(String, String)],
        interactive: bool,
    ) -> Result<Container<'_>> {
        let spec = self.stage_spec(stage, what, env, interactive);
        let container = self.engine.container(self.sh, &spec)?;
        self.send_inputs(stage, &container)?;
        Ok(container)
    }

    /// The container of `stage`, `python-fips-<what>-<pid>`: its script (or an interactive
    /// shell) in the builder image with `env`.
    fn stage_spec(
        &self,
        stage: &StageSpec,
        what: &str,
        env: &[(String, String)],
        interactive: bool,
    ) -> ContainerSpec {
        let command: Vec<String> = if interactive {
            vec!["bash".into()]
        } else {
            vec![
                "sh".into(),
                "-c".into(),
                "exec sh -eux /build/stage.sh 2>&1".into(),
            ]
        };
        let mut spec = ContainerSpec {
            env: env.to_vec(),
            workdir: Some("/build".into()),
            interactive,
            command,
            ..self.host().spec(what, &self.image_id)
        };
        spec.labels
            .push(("python-fips.stage".into(), stage.name.into()));
        spec
    }

    fn send_inputs(&self, stage: &StageSpec, container: &Container) -> Result<()> {
        container.copy_in("/", |w| {
            let mut tar = tar::Builder::new(w);
            tar.follow_symlinks(false);
            add_bytes(&mut tar, "build/stage.sh", stage.script.as_bytes(), 0o755)?;
            for (dest, text) in stage.carried_files() {
                add_bytes(&mut tar, &format!("build/{dest}"), text.as_bytes(), 0o755)?;
            }
            let env: String = stage
                .env(self)
                .iter()
                .map(|(k, v)| format!("export {k}='{v}'\n"))
                .collect();
            add_bytes(&mut tar, "build/env", env.as_bytes(), 0o644)?;
            append_inputs(&mut tar, stage)?;
            tar.finish()?;
            Ok(())
        })?;
        for dep in &stage.deps {
            container.copy_in("/opt", |w| {
                let mut f = std::fs::File::open(&dep.output).with_context(|| {
                    format!(
                        "cannot open the output of stage {}: {}",
                        dep.name,
                        dep.output.display()
                    )
                })?;
                std::io::copy(&mut f, w)
                    .with_context(|| format!("cannot read {}", dep.output.display()))?;
                Ok(())
            })?;
        }
        Ok(())
    }

    fn failure(
        &self,
        stage: &StageSpec,
        container: &str,
        env: &[(String, String)],
        log: &Path,
        seconds: f64,
    ) -> anyhow::Error {
        let failed = Failed {
            stage: stage.name.into(),
            container: container.into(),
            image: self.image_id.clone(),
            log: log.to_path_buf(),
            env: env.to_vec(),
        };
        let record = self.host().failed_record();
        let _ = serde_json::to_vec_pretty(&failed).map(|b| cache::write_atomic(&record, &b));
        let hint = format!(
            "it ran {seconds:.1} s; the failed container {container} is kept; enter it with:\n    \
             cargo xtask shell --failed\nor by hand:\n    {}",
            self.engine.failed_stage_hint(container, stage.name),
        );
        crate::host::log_failure(&format!("stage {}", stage.name), log, 30, Some(&hint))
    }
}

/// Puts the reuse directory `entry` into the container of `stage`.
fn put_reuse(stage: &str, container: &Container, entry: &Path) -> Result<()> {
    let carried = container.copy_in("/", |w| {
        let mut f = std::fs::File::open(entry)
            .with_context(|| format!("cannot open {}", entry.display()))?;
        std::io::copy(&mut f, w).with_context(|| format!("cannot read {}", entry.display()))?;
        Ok(())
    });
    carried.with_context(|| {
        format!(
            "cannot put the reuse directory {} into the container of stage {stage}\n\
             hint: it holds nothing a build needs; delete it and run again",
            entry.display()
        )
    })
}

/// What `run_together` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Together {
    /// Each stage script's own time, in order, as `(stage, seconds)`.
    pub scripts: Vec<(String, f64)>,
    /// The whole run: container creation, sending the inputs, every script.
    pub seconds: f64,
}

impl Together {
    pub fn script(&self, name: &str) -> Option<f64> {
        self.scripts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }
}

/// The marker lines the floor's driver prints around each script.
const MARK: &str = "python-fips-floor";

/// The floor's driver: each stage script in a subshell with that stage's environment, between
/// two marker lines holding the container's clock, then its output merged into `PREFIX`.
fn together_script(
    stages: &[StageSpec],
    env_of: impl Fn(&StageSpec) -> Vec<(String, String)>,
) -> String {
    let mut out = String::from("# The floor: every stage script in this one container.\n");
    for stage in stages {
        let name = stage.name;
        out.push_str(&format!("echo \"{MARK} {name} start $(date +%s.%N)\"\n(\n"));
        for (k, v) in env_of(stage) {
            out.push_str(&format!("export {k}={}\n", sh_quote(&v)));
        }
        out.push_str(&format!("cd /build\nsh -eux /build/floor/{name}.sh\n)\n"));
        out.push_str(&format!("echo \"{MARK} {name} end $(date +%s.%N)\"\n"));
        if stage.output != PREFIX {
            out.push_str(&format!(
                "mkdir -p {PREFIX}\ncp -a {}/. {PREFIX}/\n",
                stage.output
            ));
        }
    }
    out
}

/// `v` in single quotes for sh.
fn sh_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// `(stage, start|end, clock)` from a marker line.
fn parse_mark(line: &str) -> Option<(String, bool, f64)> {
    let mut words = line.strip_prefix(MARK)?.split_whitespace();
    let name = words.next()?.to_string();
    let start = match words.next()? {
        "start" => true,
        "end" => false,
        _ => return None,
    };
    let clock = words.next()?.parse().ok()?;
    Some((name, start, clock))
}

/// Each stage's time from its start and end markers, in order of the starts.
fn script_times(marks: &[(String, bool, f64)]) -> Vec<(String, f64)> {
    let mut times = Vec::new();
    for (name, start, at) in marks {
        if !*start {
            continue;
        }
        if let Some((_, _, end)) = marks.iter().find(|(n, s, _)| n == name && !*s) {
            times.push((name.clone(), end - at));
        }
    }
    times
}

/// Appends `stage`'s inputs (files and directories) under `build/`.
fn append_inputs<W: std::io::Write>(tar: &mut tar::Builder<W>, stage: &StageSpec) -> Result<()> {
    for input in &stage.inputs {
        let dest = format!("build/{}", input.dest);
        if input.host.is_dir() {
            tar.append_dir_all(&dest, &input.host)
        } else {
            tar.append_path_with_name(&input.host, &dest)
        }
        .with_context(|| format!("cannot pack {}", input.host.display()))?;
    }
    Ok(())
}

fn add_bytes<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> StageSpec {
        StageSpec {
            name: "python",
            script: "make\n",
            files: vec![("helper", "true\n")],
            env: vec![(
                "PYTHON_CONFIGURE".into(),
                "--with-ssl-default-suites=openssl".into(),
            )],
            inputs: vec![Input {
                dest: "src/Python-3.13.15".into(),
                host: PathBuf::from("/nonexistent"),
                content: "tree-a".into(),
            }],
            deps: vec![Done {
                entry: "openssl".into(),
                name: "openssl".into(),
                key: "k-openssl".into(),
                cached: true,
                origin: Some(Origin::Local),
                start: 0.0,
                seconds: 0.0,
                script_seconds: 0.0,
                output: PathBuf::new(),
            }],
            output: PREFIX,
            source_date_epoch: Some(1),
            reuse: true,
        }
    }

    /// Calls `f` with a builder of the given image id, architecture, jobs and reuse.
    fn with_builder<T>(
        image: &str,
        arch: &str,
        jobs: usize,
        reuse: bool,
        f: impl FnOnce(&Runner) -> T,
    ) -> T {
        let sh = Shell::new().unwrap();
        // A directory of its own: tests run in parallel, and opening a cache adopts its root.
        let tmp = crate::testutil::TempDir::new("pf-key-tests");
        // Keys are computed without running the engine.
        let engine_dir = crate::testutil::TempDir::new("pf-key-engine");
        let engine = Engine::fake(engine_dir.path(), "exit 1");
        let cache = Cache::open(Some(tmp.path())).unwrap();
        let b = Runner {
            sh: &sh,
            engine: &engine,
            cache: &cache,
            image_id: image.into(),
            arch: crate::arch::parse(arch).unwrap(),
            jobs,
            reuse,
            dry_run: false,
            origin: Instant::now(),
            remotes: &[],
            shared_stages: None,
        };
        f(&b)
    }

    fn key(image: &str, arch: &str, jobs: usize, s: &StageSpec) -> String {
        with_builder(image, arch, jobs, true, |b| s.key(b).to_string())
    }

    #[test]
    fn key_is_stable_and_ignores_parallelism_and_the_compiler_cache() {
        let a = key("sha256:img", "x86_64", 2, &stage());
        assert_eq!(a, key("sha256:img", "x86_64", 2, &stage()));
        assert_eq!(a, key("sha256:img", "x86_64", 64, &stage()));
        let without = with_builder("sha256:img", "x86_64", 2, false, |b| {
            stage().key(b).to_string()
        });
        assert_eq!(a, without, "the reuse directory must not change a key");
    }

    #[test]
    fn the_reuse_directory_reaches_only_stages_that_compile_in_runs_that_carry_one() {
        let has = |s: &StageSpec, reuse: bool| {
            with_builder("sha256:img", "x86_64", 2, reuse, |b| {
                let env = s.env(b);
                let dir = ["REUSE_DIR", "CCACHE_DIR"]
                    .iter()
                    .all(|v| env.iter().any(|(k, _)| k == v));
                let script = s.carried_files().iter().any(|(d, _)| *d == "ccache.sh");
                (dir, script)
            })
        };
        assert_eq!(has(&stage(), true), (true, true));
        assert_eq!(has(&stage(), false), (false, true));
        let mut finalize = stage();
        finalize.reuse = false;
        assert_eq!(has(&finalize, true), (false, false));
        let entry = with_builder("sha256:0123456789abcdef0123", "aarch64", 2, true, |b| {
            b.reuse_entry("python")
        });
        assert!(
            entry.ends_with("reuse/python-aarch64-0123456789abcdef.tar"),
            "{}",
            entry.display()
        );
    }

    #[test]
    fn a_stage_without_an_epoch_of_its_own_gets_none() {
        let mut s = stage();
        s.source_date_epoch = None;
        let env = with_builder("sha256:img", "x86_64", 2, true, |b| s.env(b));
        assert!(
            !env.iter().any(|(k, _)| k == "SOURCE_DATE_EPOCH"),
            "{env:?}"
        );
        let mut s = stage();
        s.source_date_epoch = Some(1_700_000_000);
        let env = with_builder("sha256:img", "x86_64", 2, true, |b| s.env(b));
        assert!(env.contains(&("SOURCE_DATE_EPOCH".into(), "1700000000".into())));
    }

    #[test]
    fn key_changes_with_every_input() {
        let base = key("sha256:img", "x86_64", 2, &stage());
        let mut variants: Vec<(&str, StageSpec)> = Vec::new();
        let mut s = stage();
        s.script = "make -k\n";
        variants.push(("script", s));
        let mut s = stage();
        s.env[0].1.push(' ');
        variants.push(("recipe field", s));
        let mut s = stage();
        s.inputs[0].content = "tree-b".into();
        variants.push(("source or patch bytes", s));
        let mut s = stage();
        s.deps[0].key = "k-openssl-2".into();
        variants.push(("dependency key", s));
        let mut s = stage();
        s.files[0].1 = "false\n";
        variants.push(("carried file", s));
        let mut s = stage();
        s.output = "/out/python-fips";
        variants.push(("output path", s));
        let mut s = stage();
        s.source_date_epoch = Some(2);
        variants.push(("SOURCE_DATE_EPOCH", s));
        let mut s = stage();
        s.source_date_epoch = None;
        variants.push(("SOURCE_DATE_EPOCH left to the script", s));
        for (what, s) in variants {
            assert_ne!(
                key("sha256:img", "x86_64", 2, &s),
                base,
                "changing the {what} must change the key"
            );
        }
        assert_ne!(
            key("sha256:other", "x86_64", 2, &stage()),
            base,
            "builder image"
        );
        assert_ne!(
            key("sha256:img", "aarch64", 2, &stage()),
            base,
            "architecture"
        );
    }

    #[test]
    fn the_floor_runs_each_script_with_its_own_env_and_is_timed_by_markers() {
        let mut provider = stage();
        provider.name = "fips-provider";
        provider.output = "/out/python-fips";
        provider.env = vec![("PROVIDER_FILE".into(), "it's.tar.gz".into())];
        let script = together_script(&[provider, stage()], |s| s.env.clone());
        let provider_at = script.find("/build/floor/fips-provider.sh").unwrap();
        let python_at = script.find("/build/floor/python.sh").unwrap();
        assert!(provider_at < python_at, "{script}");
        assert!(
            script.contains(r"export PROVIDER_FILE='it'\''s.tar.gz'"),
            "{script}"
        );
        // The provider's output is merged into the prefix; the python stage's already is there.
        assert_eq!(script.matches("cp -a").count(), 1, "{script}");
        assert!(script.contains("cp -a /out/python-fips/. /opt/python-fips/"));

        let lines = [
            "python-fips-floor fips-provider start 100.5",
            "+ make",
            "python-fips-floor fips-provider end 160.0",
            "python-fips-floor python start 160.25",
            "+ echo python-fips-floor python end 1",
            "python-fips-floor python end 400.25",
        ];
        let marks: Vec<_> = lines.iter().filter_map(|l| parse_mark(l)).collect();
        assert_eq!(marks.len(), 4);
        assert_eq!(
            script_times(&marks),
            vec![("fips-provider".into(), 59.5), ("python".into(), 240.0)]
        );
    }

    #[test]
    fn key_encoding_is_unambiguous() {
        let mut a = BTreeMap::new();
        a.insert("a".to_string(), "b=c".to_string());
        let mut b = BTreeMap::new();
        b.insert("a=b".to_string(), "c".to_string());
        assert_ne!(key_of(&a), key_of(&b));
    }
}
