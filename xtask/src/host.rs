//! `Host`: the shell, the engine and the cache of a run, and what every part of the build does
//! with them alike: logged container steps, images found by a content key, scratch directories
//! and the housekeeping of containers.
//!
//! A step is a container made from a spec, given its inputs, run attached with its output in a
//! log and shown to the `Reporter` line by line. Every step that fails says so in one shape:
//! what failed, the end of its log and the log's path, then what to try.
//!
//! Every container a run creates carries two labels, its owner (`<host>:<pid>`) and its cache,
//! so that a later run of the same cache removes those whose run died (`prune_stale`).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use xshell::Shell;

use crate::cache::{self, Cache};
use crate::engine::{Container, ContainerSpec, Engine};
use crate::progress::{Reporter, SilentTransfer, StepEvent, Transfer};

/// Label on every container this tool creates, valued `<host>:<pid>` of the run that owns it.
pub const OWNER_LABEL: &str = "python-fips.owner";
/// Label naming the cache root of the run that created the container.
pub const CACHE_LABEL: &str = "python-fips.cache";

/// The shell, the engine and the cache of a run.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    sh: &'a Shell,
    engine: &'a Engine,
    cache: &'a Cache,
}

/// One logged container step, as the reporter shows it.
pub struct Step<'s> {
    /// The name it is shown under (`python`, `floor`, `verify`).
    pub name: &'s str,
    /// What it does while it runs (`running`).
    pub doing: &'s str,
    pub log: &'s Path,
    /// Whether a command that exits non-zero failed the step. The checks of `verify` report
    /// their failures in their output instead: for them an exit is a result, not a failure.
    pub exit_fails: bool,
}

/// A step whose container ran: whether its command succeeded, and the container, removed when
/// it is dropped unless it is kept (`Container::keep`).
pub struct Ran<'h> {
    pub container: Container<'h>,
    pub ok: bool,
    log: PathBuf,
}

impl<'h> Ran<'h> {
    /// The container of a step whose command succeeded; else the step's error (`log_failure`),
    /// after its container is removed.
    pub fn succeeded(self, what: &str, lines: usize, hint: Option<&str>) -> Result<Container<'h>> {
        if self.ok {
            return Ok(self.container);
        }
        drop(self.container);
        Err(log_failure(what, &self.log, lines, hint))
    }
}

/// An image found by its content key, or made.
pub struct KeyedImage<'k> {
    /// The name it is shown under (`image`, `builder`).
    pub name: &'k str,
    pub key: &'k str,
    /// The image's label that holds `key`; `None` for an image found by its first tag, which
    /// names the key (the builder images, which carry no label of their own).
    pub label: Option<&'k str>,
    pub tags: &'k [String],
}

/// What made a missing keyed image.
pub enum Made {
    /// It was built here; `note` says what was made.
    Built { id: String, note: String },
    /// It came from elsewhere (a shared cache), which was reported.
    Fetched(String),
}

/// How a keyed image was had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Got {
    /// The engine had it.
    Cached,
    Fetched,
    Built,
}

/// An image built from a context directory.
pub struct ContextBuild<'b> {
    /// The name it is shown under.
    pub name: &'b str,
    /// What the error of a failed build says failed (`building the runtime image python-fips:3.13`).
    pub what: String,
    /// The label of its scratch directory in the cache (`image`).
    pub scratch: &'b str,
    pub log: PathBuf,
    /// The platform it is for (`linux/arm64`), or `None` for the engine's own.
    pub platform: Option<&'b str>,
    pub tags: &'b [String],
    pub labels: Vec<(String, String)>,
    /// What to try when it fails.
    pub hint: Option<String>,
}

impl<'a> Host<'a> {
    pub fn new(sh: &'a Shell, engine: &'a Engine, cache: &'a Cache) -> Host<'a> {
        Host { sh, engine, cache }
    }

    pub fn shell(&self) -> &'a Shell {
        self.sh
    }

    pub fn engine(&self) -> &'a Engine {
        self.engine
    }

    pub fn cache(&self) -> &'a Cache {
        self.cache
    }

    /// The labels every container of this run carries: its owner and its cache.
    pub fn labels(&self) -> Vec<(String, String)> {
        vec![
            (OWNER_LABEL.into(), owner()),
            (CACHE_LABEL.into(), self.cache.root().display().to_string()),
        ]
    }

    /// A container of `image` named `python-fips-<what>-<pid>` with this run's labels; the
    /// rest of the spec is the caller's.
    pub fn spec(&self, what: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            name: format!("python-fips-{what}-{}", std::process::id()),
            image: image.to_string(),
            labels: self.labels(),
            ..ContainerSpec::default()
        }
    }

    /// `logs/<stem>.log`, emptied of any earlier run's lines (a step's log is appended to).
    pub fn log(&self, stem: &str) -> PathBuf {
        let log = self.cache.dir("logs").join(format!("{stem}.log"));
        let _ = std::fs::remove_file(&log);
        log
    }

    /// `logs/<stem>-<unix time>.log`: a log of its own for each run.
    pub fn stamped_log(&self, stem: &str) -> PathBuf {
        self.cache
            .dir("logs")
            .join(format!("{stem}-{}.log", unix_now()))
    }

    /// A scratch directory of the cache, removed when the guard is dropped.
    pub fn scratch(&self, label: &str) -> Result<Scratch> {
        Scratch::new(self.cache, label)
    }

    /// Runs one step: creates the container of `spec`, lets `put` give it its inputs, then
    /// runs it with its output appended to `step.log`, each line passed to `on_line` and shown.
    /// An error is an engine's (the caller says what it was doing); a command that failed is
    /// `Ran::ok`, and the caller keeps the container or takes the error (`Ran::succeeded`).
    pub fn run_step(
        &self,
        step: &Step,
        spec: &ContainerSpec,
        put: impl FnOnce(&Container) -> Result<()>,
        mut on_line: impl FnMut(&str),
        ui: &dyn Reporter,
    ) -> Result<Ran<'a>> {
        let container = self.engine.container(self.sh, spec)?;
        put(&container)?;
        let ok = shown(
            step,
            ui,
            |line| on_line(line),
            |each| container.run_logged(step.log, each),
        )?;
        Ok(Ran {
            container,
            ok,
            log: step.log.to_path_buf(),
        })
    }

    /// Builds the image of a context directory, which `fill` writes into a scratch directory
    /// (removed afterwards), and returns its id. Its output is logged and shown as a step's.
    pub fn build_context(
        &self,
        build: &ContextBuild,
        ui: &dyn Reporter,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<String> {
        let context = self.scratch(build.scratch)?;
        fill(context.path())?;
        let step = Step {
            name: build.name,
            doing: "building",
            log: &build.log,
            exit_fails: true,
        };
        let ok = shown(
            &step,
            ui,
            |_| {},
            |each| {
                self.engine.build_for(
                    build.platform,
                    context.path(),
                    build.tags,
                    &build.labels,
                    &build.log,
                    each,
                )
            },
        )?;
        if !ok {
            return Err(log_failure(
                &build.what,
                &build.log,
                30,
                build.hint.as_deref(),
            ));
        }
        let tag = &build.tags[0];
        let id = self
            .engine
            .image_id(self.sh, tag)?
            .with_context(|| format!("{tag} is missing right after it was built"))?;
        context.remove()?;
        Ok(id)
    }

    /// The id of the image `image` names by its key, if the engine has it: given every tag of
    /// `image` (when it was found by its label) and shown as cached.
    pub fn find_image(&self, image: &KeyedImage, ui: &dyn Reporter) -> Result<Option<String>> {
        let (sh, engine) = (self.sh, self.engine);
        let id = match image.label {
            Some(label) => engine
                .images_with_label(sh, label, image.key)?
                .into_iter()
                .next(),
            None => engine.image_id(sh, &image.tags[0])?,
        };
        let Some(id) = id else {
            return Ok(None);
        };
        if image.label.is_some() {
            for tag in image.tags {
                engine.tag(sh, &id, tag)?;
            }
        }
        ui.step(
            image.name,
            StepEvent::Skipped {
                what: &format!("cached ({})", image.tags.join(", ")),
            },
        );
        Ok(Some(id))
    }

    /// The image `image` names by its key: the engine's (`find_image`), else what `make` gives,
    /// timed and shown when it was built here.
    pub fn keyed_image(
        &self,
        image: &KeyedImage,
        ui: &dyn Reporter,
        make: impl FnOnce() -> Result<Made>,
    ) -> Result<(String, Got)> {
        if let Some(id) = self.find_image(image, ui)? {
            return Ok((id, Got::Cached));
        }
        let started = Instant::now();
        match make()? {
            Made::Fetched(id) => Ok((id, Got::Fetched)),
            Made::Built { id, note } => {
                ui.step(
                    image.name,
                    StepEvent::Ran {
                        seconds: started.elapsed().as_secs_f64(),
                        note: Some(&note),
                    },
                );
                Ok((id, Got::Built))
            }
        }
    }

    /// `failed.json`: the record of the container the last failed stage left.
    pub fn failed_record(&self) -> PathBuf {
        self.cache.dir("failed.json")
    }

    /// Removes containers left by runs of this host and this cache that died (killed mid-stage),
    /// but keeps the one a failed stage left for debugging. Other caches' containers are theirs.
    pub fn prune_stale(&self) -> Result<()> {
        /// What `prune_stale` reads of the failed stage's record.
        #[derive(serde::Deserialize)]
        struct Failed {
            container: String,
        }
        let kept = std::fs::read(self.failed_record())
            .ok()
            .and_then(|b| serde_json::from_slice::<Failed>(&b).ok())
            .map(|f| f.container);
        let kept = kept.as_deref();
        let me = hostname();
        let root = self.cache.root().display().to_string();
        for (name, labels) in self.engine.containers_with_label(self.sh, OWNER_LABEL)? {
            let label = |key: &str| labels.get(key).map_or("", String::as_str);
            if label(CACHE_LABEL) != root {
                continue;
            }
            let owner = label(OWNER_LABEL);
            let Some((host, pid)) = owner.rsplit_once(':') else {
                continue;
            };
            let alive = Path::new("/proc").join(pid).exists();
            if host == me && !alive && kept != Some(name.as_str()) {
                self.engine.remove(self.sh, &name);
            }
        }
        Ok(())
    }
}

/// Shows a step: started, each line `run` passes on (after `on_line` has it), and failed when
/// `run` fails or, if `step.exit_fails`, says its command failed. Returns what `run` said.
fn shown(
    step: &Step,
    ui: &dyn Reporter,
    mut on_line: impl FnMut(&str),
    run: impl FnOnce(&mut dyn FnMut(&str)) -> Result<bool>,
) -> Result<bool> {
    ui.step(
        step.name,
        StepEvent::Started {
            doing: step.doing,
            log: step.log,
        },
    );
    let ok = run(&mut |line| {
        on_line(line);
        ui.step(step.name, StepEvent::Output { line });
    });
    let failed = match &ok {
        Ok(ok) => step.exit_fails && !ok,
        Err(_) => true,
    };
    if failed {
        ui.step(step.name, StepEvent::Failed { log: step.log });
    }
    ok
}

/// The error of a step that failed: `<what> failed`, the last `lines` lines of its log, the
/// log's path, then `hint` on a line of its own.
pub fn log_failure(what: &str, log: &Path, lines: usize, hint: Option<&str>) -> anyhow::Error {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let hint = hint.map(|h| format!("\n{h}")).unwrap_or_default();
    anyhow::anyhow!(
        "{what} failed; the last {lines} lines of its log:\n{}\n\nfull log: {}{hint}",
        last_lines(&text, lines),
        log.display()
    )
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a step that is part of another is shown through: nothing (the runtime image's package
/// mapping, the build of the wheels image).
pub struct Unshown;

impl Reporter for Unshown {
    fn download_started(&self, _: &str, _: Option<u64>, _: u64) -> Box<dyn Transfer + '_> {
        Box::new(SilentTransfer)
    }
    fn message(&self, _: &str) {}
}

/// A scratch directory of the cache (`Cache::scratch`), removed when the guard is dropped unless
/// it was published (moved into the cache) or removed by `remove`.
pub struct Scratch {
    path: Option<PathBuf>,
}

impl Scratch {
    /// A new scratch directory of `cache` (`Cache::scratch`).
    pub fn new(cache: &Cache, label: &str) -> Result<Scratch> {
        Ok(Scratch {
            path: Some(cache.scratch(label)?),
        })
    }

    pub fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("a scratch guard holds its path until it is consumed")
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path().join(name)
    }

    /// Publishes the file `name` of the directory at `to` (`cache::publish`), then removes the
    /// directory.
    pub fn publish(self, name: &str, to: &Path) -> Result<()> {
        cache::publish(&self.join(name), to)?;
        self.remove()
    }

    /// Says the directory itself was published (moved away): the guard leaves it.
    pub fn published(mut self) {
        self.path = None;
    }

    /// Removes the directory now, with the error if that fails.
    pub fn remove(mut self) -> Result<()> {
        match self.path.take() {
            Some(path) => cache::remove(&path),
            None => Ok(()),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = cache::remove(&path);
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `<host>:<pid>` of this run.
fn owner() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Recorder;
    use crate::testutil::TempDir;

    /// A fake engine whose containers print two lines and exit with `exit`; it records each
    /// call's first word in `calls`.
    fn engine(dir: &Path, exit: u8) -> Engine {
        let calls = dir.join("calls");
        Engine::fake(
            dir,
            &format!(
                "echo \"$1\" >> '{}'
case \"$1\" in
    start) echo one; echo two; exit {exit} ;;
    cp) cat > /dev/null ;;
esac
exit 0
",
                calls.display()
            ),
        )
    }

    fn calls(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
        text.lines().map(String::from).collect()
    }

    #[test]
    fn a_step_is_shown_in_order_and_its_failure_has_one_shape() {
        for (exit, ok) in [(0, true), (2, false)] {
            let dir = TempDir::new("host-step");
            let engine = engine(dir.path(), exit);
            let sh = Shell::new().unwrap();
            let cache = Cache::open(Some(&dir.path().join("cache"))).unwrap();
            let host = Host::new(&sh, &engine, &cache);
            let log = host.log("step");
            let step = Step {
                name: "s",
                doing: "running",
                log: &log,
                exit_fails: true,
            };
            let spec = host.spec("s", "img");
            assert!(spec.name.starts_with("python-fips-s-"), "{}", spec.name);
            assert_eq!(spec.labels[0].0, "python-fips.owner");
            assert_eq!(spec.labels[1].0, "python-fips.cache");
            let ui = Recorder::default();
            let mut seen = Vec::new();
            let put = |c: &Container| c.put_file("/", "f", b"x", 0o644);
            let ran = host
                .run_step(&step, &spec, put, |l| seen.push(l.to_string()), &ui)
                .unwrap();
            assert_eq!(ran.ok, ok);
            assert_eq!(seen, ["one", "two"]);
            let shown: Vec<String> = ui.lines().into_iter().map(|(_, l)| l).collect();
            assert!(shown[0].contains("running"), "{shown:?}");
            assert!(shown[1].ends_with("| one") && shown[2].ends_with("| two"));
            assert_eq!(shown.len(), if ok { 3 } else { 4 }, "{shown:?}");
            let err = ran.succeeded("the step", 1, Some("try again")).err();
            assert_eq!(
                calls(dir.path()).last().unwrap(),
                "rm",
                "the container is left"
            );
            assert_eq!(err.is_none(), ok);
            if let Some(err) = err {
                let err = err.to_string();
                let want = format!(
                    "the step failed; the last 1 lines of its log:\ntwo\n\nfull log: {}\ntry again",
                    log.display()
                );
                assert_eq!(err, want);
            }
        }
    }

    #[test]
    fn a_checks_exit_is_a_result_not_a_failed_step() {
        let dir = TempDir::new("host-exit");
        let engine = engine(dir.path(), 1);
        let sh = Shell::new().unwrap();
        let cache = Cache::open(Some(&dir.path().join("cache"))).unwrap();
        let host = Host::new(&sh, &engine, &cache);
        let log = host.stamped_log("checks");
        let step = Step {
            name: "verify",
            doing: "running",
            log: &log,
            exit_fails: false,
        };
        let ui = Recorder::default();
        let ran = host
            .run_step(&step, &host.spec("v", "img"), |_| Ok(()), |_| {}, &ui)
            .unwrap();
        assert!(!ran.ok);
        assert!(!ui.lines().iter().any(|(_, l)| l.contains("failed")));
    }

    #[test]
    fn a_scratch_directory_goes_unless_it_was_published() {
        let dir = TempDir::new("host-scratch");
        let cache = Cache::open(Some(&dir.path().join("cache"))).unwrap();
        let dropped = Scratch::new(&cache, "t").unwrap();
        let path = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!path.exists());
        let file = Scratch::new(&cache, "t").unwrap();
        std::fs::write(file.join("f"), "x").unwrap();
        let path = file.path().to_path_buf();
        let to = cache.dir("entries").join("f");
        file.publish("f", &to).unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "x");
        let moved = Scratch::new(&cache, "t").unwrap();
        let path = moved.path().to_path_buf();
        let entry = cache.dir("entry");
        std::fs::rename(&path, &entry).unwrap();
        moved.published();
        assert!(entry.is_dir());
    }
}
