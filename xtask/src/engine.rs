//! The container engine: the docker or podman CLI. Nothing but this module starts a container.
//!
//! A container this tool creates is owned by a `Container` guard (`Engine::container`): files
//! and tar streams go in, its command runs attached and logged, files come out, and it is
//! removed when the guard is dropped, on every return path, unless `keep` was called.
//!
//! Control commands go through xshell. Tar streams in and out of containers, and attached
//! runs whose output is logged line by line, use `std::process` because xshell buffers
//! stdin and stdout in memory and cannot hand stdio to the user.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

/// A container engine CLI, found on `PATH`.
#[derive(Debug, Clone)]
pub struct Engine {
    /// `docker` or `podman` (or a path to one of them).
    program: String,
    /// The host's architecture, asked once (`arch`).
    arch: std::sync::OnceLock<String>,
}

/// The engine's program, as messages name it.
impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)
    }
}

/// What a new container is made of.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub workdir: Option<String>,
    /// Allocate a TTY and keep stdin open (interactive shells).
    pub interactive: bool,
    /// Share the host's network (to reach a service on its loopback) instead of the default.
    pub host_network: bool,
    pub command: Vec<String>,
}

/// The commands that log in to the registry `host`, with either engine: the registry client
/// reads the logins of both.
pub fn login_hint(host: &str) -> String {
    format!("docker login {host}` or `podman login {host}")
}

/// What to do when no engine answered: check the one asked for (and name the other), or start
/// Docker or install podman when none was.
fn no_engine_hint(choice: Option<&str>) -> String {
    let Some(program) = choice else {
        return "is the Docker engine running? try `docker info`, or install podman (--engine picks one)".to_string();
    };
    let name = Path::new(program)
        .file_name()
        .map_or(program.to_string(), |n| n.to_string_lossy().into_owned());
    let other = match name.starts_with("podman") {
        true => "--engine docker",
        false if name.starts_with("docker") => "--engine podman",
        false => "--engine docker or --engine podman",
    };
    format!(
        "is {program} installed (and its service running)? try `{program} info`, or pass {other}"
    )
}

impl Engine {
    /// Uses `choice`, or the first of docker and podman that answers, and checks the engine is up.
    pub fn detect(sh: &Shell, choice: Option<&str>) -> Result<Engine> {
        let candidates: Vec<&str> = match choice {
            Some(c) => vec![c],
            None => vec!["docker", "podman"],
        };
        let mut tried = Vec::new();
        for program in candidates {
            let format = "{{.Server.Version}}";
            let out = cmd!(sh, "{program} version --format {format}")
                .quiet()
                .ignore_status()
                .output();
            match out {
                Ok(out) if out.status.success() => {
                    return Ok(Engine {
                        program: program.to_string(),
                        arch: Default::default(),
                    });
                }
                Ok(out) => tried.push(format!(
                    "`{program} version` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => tried.push(format!("`{program}` cannot be run: {e}")),
            }
        }
        bail!(
            "no container engine is usable:\n  {}\nhint: {}",
            tried.join("\n  "),
            no_engine_hint(choice)
        )
    }

    /// The engine host's architecture in the kernel's spelling (`x86_64`, `aarch64`), asked of
    /// the engine once.
    pub fn arch(&self, sh: &Shell) -> Result<String> {
        if let Some(arch) = self.arch.get() {
            return Ok(arch.clone());
        }
        let program = &self.program;
        let format = match self.is_podman() {
            true => "{{.Host.Arch}}",
            false => "{{.Architecture}}",
        };
        let arch = cmd!(sh, "{program} info --format {format}")
            .quiet()
            .read()
            .with_context(|| {
                format!("cannot ask {program} for its architecture; try `{program} info`")
            })?;
        let arch = match arch.trim() {
            "amd64" => "x86_64".to_string(),
            "arm64" => "aarch64".to_string(),
            other => other.to_string(),
        };
        Ok(self.arch.get_or_init(|| arch).clone())
    }

    /// Whether the program is podman, whose `info` and image ids are spelled differently.
    fn is_podman(&self) -> bool {
        Path::new(&self.program)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("podman"))
    }

    /// The id of a local image, or `None` if the engine has no such image. Always
    /// `sha256:<hex>`, as docker gives it (podman gives the same hex bare), so that a builder
    /// image loaded into either engine keys the stages alike.
    pub fn image_id(&self, sh: &Shell, image: &str) -> Result<Option<String>> {
        let program = &self.program;
        let format = "{{.Id}}";
        let out = cmd!(sh, "{program} image inspect --format {format} {image}")
            .quiet()
            .ignore_status()
            .output()?;
        if out.status.success() {
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Ok(Some(match id.len() == 64 && !id.contains(':') {
                true => format!("sha256:{id}"),
                false => id,
            }))
        } else {
            Ok(None)
        }
    }

    /// Pulls `image` from its registry; returns whether that worked.
    pub fn pull(&self, sh: &Shell, image: &str) -> bool {
        let program = &self.program;
        cmd!(sh, "{program} pull --quiet {image}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
    }

    /// The architecture an image's config records (`amd64`, `arm64`), or `None` if it is missing.
    pub fn image_arch(&self, sh: &Shell, image: &str) -> Result<Option<String>> {
        let program = &self.program;
        let format = "{{.Architecture}}";
        let out = cmd!(sh, "{program} image inspect --format {format} {image}")
            .quiet()
            .ignore_status()
            .output()?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    /// Creates a container from `spec`, owned by the returned guard: it is removed when the
    /// guard is dropped unless `Container::keep` was called. A container that could not be
    /// created leaves nothing to remove.
    pub fn container<'a>(&'a self, sh: &'a Shell, spec: &ContainerSpec) -> Result<Container<'a>> {
        self.create(sh, spec)?;
        Ok(Container {
            engine: self,
            sh,
            name: spec.name.clone(),
            kept: false,
        })
    }

    fn create(&self, sh: &Shell, spec: &ContainerSpec) -> Result<()> {
        let program = &self.program;
        let mut args = vec![
            "create".to_string(),
            "--name".to_string(),
            spec.name.clone(),
        ];
        if spec.interactive {
            args.push("--interactive".into());
            args.push("--tty".into());
        }
        for (k, v) in &spec.env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        for (k, v) in &spec.labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        if let Some(w) = &spec.workdir {
            args.push("--workdir".into());
            args.push(w.clone());
        }
        if spec.host_network {
            // The host's network comes with the host's name: engines refuse to set another.
            args.push("--network=host".into());
        } else {
            // A fixed hostname keeps the build machine's name out of anything the build records.
            args.push("--hostname".into());
            args.push("python-fips-build".into());
        }
        args.push(spec.image.clone());
        args.extend(spec.command.iter().cloned());
        let out = cmd!(sh, "{program} {args...}")
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            bail!(
                "`{program} create` of {} from {} failed: {}",
                spec.name,
                spec.image,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Streams a tar archive into `container` and unpacks it at `dest` (an existing directory).
    fn copy_in(
        &self,
        container: &str,
        dest: &str,
        write_tar: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        let mut child = Command::new(&self.program)
            .args(["cp", "-", &format!("{container}:{dest}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{} cp`", self.program))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let written = write_tar(&mut stdin);
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "`{} cp - {container}:{dest}` failed: {}",
                self.program,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        written.with_context(|| format!("cannot send files into {container}:{dest}"))
    }

    /// Puts one file, `dir/name` with `bytes` and `mode`, into `container` (`dir` must exist).
    fn put_file(
        &self,
        container: &str,
        dir: &str,
        name: &str,
        bytes: &[u8],
        mode: u32,
    ) -> Result<()> {
        self.copy_in(container, dir, |w| {
            let mut tar = tar::Builder::new(w);
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            tar.append_data(&mut header, name, bytes)?;
            tar.finish()?;
            Ok(())
        })
    }

    /// Copies `path` out of `container` as a tar stream into `out`.
    fn copy_out(&self, container: &str, path: &str, out: &mut dyn Write) -> Result<()> {
        self.read_out(container, path, |stdout| {
            std::io::copy(stdout, out)
                .with_context(|| format!("cannot read {container}:{path}"))?;
            Ok(())
        })
    }

    /// Copies `path` out of `container` as a tar stream and hands the stream to `read`. A
    /// failure of the copy itself comes before whatever `read` returns, as it explains it.
    fn read_out<T>(
        &self,
        container: &str,
        path: &str,
        read: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<T> {
        let mut child = Command::new(&self.program)
            .args(["cp", &format!("{container}:{path}"), "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{} cp`", self.program))?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let read = read(&mut stdout);
        if read.is_err() {
            // Let the copy finish, so that its status says whether the stream was whole.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        }
        drop(stdout);
        let res = child.wait_with_output()?;
        if !res.status.success() {
            bail!(
                "`{} cp {container}:{path} -` failed: {}",
                self.program,
                String::from_utf8_lossy(&res.stderr).trim()
            );
        }
        read
    }

    /// Starts `container` attached, appends its output to `log`, and passes each line to
    /// `on_line`. Returns whether the container's command succeeded.
    fn start_logged(&self, container: &str, log: &Path, on_line: impl FnMut(&str)) -> Result<bool> {
        // stderr is merged into stdout by the shell inside the container (`exec 2>&1`), so one
        // pipe carries the script's output; the engine's own complaints come on stderr.
        let args = ["start", "--attach", container].map(String::from);
        self.logged(&args, log, on_line)
    }

    /// Runs the engine CLI with `args`, appends its output to `log` and passes each line of its
    /// stdout to `on_line`. Returns whether it succeeded.
    fn logged(&self, args: &[String], log: &Path, on_line: impl FnMut(&str)) -> Result<bool> {
        self.logged_env(args, &[], log, on_line)
    }

    /// `logged` with `env` added to the CLI's environment.
    fn logged_env(
        &self,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
        mut on_line: impl FnMut(&str),
    ) -> Result<bool> {
        let mut log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open the log {}", log.display()))?;
        let mut child = Command::new(&self.program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run `{}`", self.program))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut s);
            s
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            log_file
                .write_all(&line)
                .with_context(|| format!("cannot write the log {}", log.display()))?;
            on_line(String::from_utf8_lossy(&line).trim_end());
        }
        let status = child.wait()?;
        let err = err_thread.join().unwrap_or_default();
        if !err.is_empty() {
            log_file
                .write_all(err.as_bytes())
                .with_context(|| format!("cannot write the log {}", log.display()))?;
        }
        Ok(status.success())
    }

    pub fn commit(&self, sh: &Shell, container: &str, tag: &str) -> Result<()> {
        let program = &self.program;
        cmd!(sh, "{program} commit {container} {tag}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("cannot commit container {container} as {tag}"))
    }

    /// Builds the image of the context directory `context` for `platform` (`linux/arm64`), or the
    /// engine's own when `None`, tagged and labelled; the output goes to `log` and each line to
    /// `on_line`. A foreign platform's `RUN` steps need QEMU user emulation
    /// (see `arch::ensure_emulation`).
    pub fn build_for(
        &self,
        platform: Option<&str>,
        context: &Path,
        tags: &[String],
        labels: &[(String, String)],
        log: &Path,
        on_line: impl FnMut(&str),
    ) -> Result<bool> {
        let mut args = vec!["build".to_string(), "--force-rm".to_string()];
        if let Some(platform) = platform {
            args.push(format!("--platform={platform}"));
        }
        for tag in tags {
            args.push("--tag".into());
            args.push(tag.clone());
        }
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.push(context.display().to_string());
        // The legacy builder records the platform it is given in the image's config, and it
        // builds from local images without a registry; BuildKit without buildx does neither
        // for a foreign platform here.
        let env: &[(&str, &str)] = match platform {
            Some(_) => &[("DOCKER_BUILDKIT", "0")],
            None => &[],
        };
        self.logged_env(&args, env, log, on_line)
    }

    /// Writes the image `image` (with its tag) to the archive `to`, on this machine.
    pub fn save(&self, sh: &Shell, image: &str, to: &Path) -> Result<()> {
        let program = &self.program;
        cmd!(sh, "{program} save --output {to} {image}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("cannot save the image {image} to {}", to.display()))
    }

    /// Loads the image archive `from` (made by `save`) into the engine, tags and all.
    pub fn load(&self, sh: &Shell, from: &Path) -> Result<()> {
        let program = &self.program;
        cmd!(sh, "{program} load --quiet --input {from}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("cannot load the image archive {}", from.display()))
    }

    /// Adds the tag `tag` to the local image `image`.
    pub fn tag(&self, sh: &Shell, image: &str, tag: &str) -> Result<()> {
        let program = &self.program;
        cmd!(sh, "{program} tag {image} {tag}")
            .quiet()
            .ignore_stdout()
            .run()
            .with_context(|| format!("cannot tag {image} as {tag}"))
    }

    /// The labels of a local image (empty when it has none).
    pub fn image_labels(&self, sh: &Shell, image: &str) -> Result<BTreeMap<String, String>> {
        let program = &self.program;
        let format = "{{json .Config.Labels}}";
        let out = cmd!(sh, "{program} image inspect --format {format} {image}")
            .quiet()
            .ignore_status()
            .output()?;
        if !out.status.success() {
            bail!(
                "there is no image {image}: {}\nlist the local ones with `{program} images`",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let labels: Option<BTreeMap<String, String>> = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("cannot read the labels of {image}"))?;
        Ok(labels.unwrap_or_default())
    }

    /// Full ids of the local images carrying `label=value`, newest first.
    pub fn images_with_label(&self, sh: &Shell, label: &str, value: &str) -> Result<Vec<String>> {
        let program = &self.program;
        let filter = format!("label={label}={value}");
        let format = "{{.ID}}";
        let out = cmd!(
            sh,
            "{program} images --no-trunc --filter {filter} --format {format}"
        )
        .quiet()
        .read()
        .with_context(|| format!("cannot list the images of {program}"))?;
        let mut ids: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
        ids.dedup();
        Ok(ids)
    }

    /// Removes a container (running or not); a missing one is fine.
    pub fn remove(&self, sh: &Shell, container: &str) {
        let program = &self.program;
        let _ = cmd!(sh, "{program} rm --force --volumes {container}")
            .quiet()
            .ignore_status()
            .ignore_stdout()
            .ignore_stderr()
            .run();
    }

    /// Containers carrying the label `label`, as (name, labels) pairs.
    pub fn containers_with_label(
        &self,
        sh: &Shell,
        label: &str,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>> {
        let program = &self.program;
        let filter = format!("label={label}");
        let format = "{{.Names}}\t{{json .Labels}}";
        let out = cmd!(sh, "{program} ps --all --filter {filter} --format {format}")
            .quiet()
            .read()?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (name, labels) = l.split_once('\t')?;
                Some((name.to_string(), parse_labels(labels)))
            })
            .collect())
    }

    /// Starts the created container `name` with the user's terminal attached to it.
    fn attach(&self, name: &str) -> Result<bool> {
        self.interactive(&["start", "--attach", "--interactive", name])
    }

    /// Runs `command` in a new container of `image`, in `workdir`, with the user's terminal,
    /// and removes the container afterwards.
    pub fn enter(&self, image: &str, workdir: &str, command: &[&str]) -> Result<bool> {
        let mut args = vec![
            "run",
            "--rm",
            "--interactive",
            "--tty",
            "--workdir",
            workdir,
            image,
        ];
        args.extend(command);
        self.interactive(&args)
    }

    /// The command a user types to look around in a container of `image`.
    pub fn shell_hint(&self, image: &str) -> String {
        format!("{} run --rm -it {image} sh", self.program)
    }

    /// The commands a user types to enter a copy of the kept container of a failed stage.
    pub fn failed_stage_hint(&self, container: &str, stage: &str) -> String {
        let engine = &self.program;
        format!(
            "{engine} commit {container} python-fips-debug:{stage} && {engine} run --rm -it --workdir /build python-fips-debug:{stage} bash"
        )
    }

    /// The commands that copy the image `image` from one machine's engine into another's.
    pub fn transfer_hint(&self, image: &str) -> String {
        let engine = &self.program;
        format!("{engine} save {image} | {engine} load")
    }

    /// The command that removes the image `image` from this engine.
    pub fn remove_image_hint(&self, image: &str) -> String {
        format!("{} rmi {image}", self.program)
    }

    /// The command that loads an image from a file.
    pub fn load_hint(&self) -> String {
        format!("{} load", self.program)
    }

    /// Runs the engine with the user's terminal attached (interactive shells).
    fn interactive(&self, args: &[&str]) -> Result<bool> {
        let status = Command::new(&self.program)
            .args(args)
            .status()
            .with_context(|| format!("cannot run `{}`", self.program))?;
        Ok(status.success())
    }

    /// An engine whose program is the shell script `script`, written to `dir` as `docker`: unit
    /// tests use it for error paths, never in place of the real engine.
    #[cfg(test)]
    pub fn fake(dir: &Path, script: &str) -> Engine {
        let program = dir.join("docker");
        std::fs::write(&program, format!("#!/bin/sh\n{script}")).unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Engine {
            program: program.display().to_string(),
            arch: Default::default(),
        }
    }
}

/// A container this tool created, removed (with its volumes) when dropped unless `keep` was
/// called: a `?` between creating a container and removing it cannot leak it.
#[derive(Debug)]
pub struct Container<'a> {
    engine: &'a Engine,
    sh: &'a Shell,
    name: String,
    kept: bool,
}

impl Container<'_> {
    /// Streams the tar archive `write_tar` writes into the container, unpacked at `dest` (an
    /// existing directory).
    pub fn copy_in(
        &self,
        dest: &str,
        write_tar: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        self.engine.copy_in(&self.name, dest, write_tar)
    }

    /// Puts one file, `dir/name` with `bytes` and `mode`, into the container (`dir` must exist).
    pub fn put_file(&self, dir: &str, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        self.engine.put_file(&self.name, dir, name, bytes, mode)
    }

    /// Copies `path` out of the container as a tar stream into `out`.
    pub fn copy_out(&self, path: &str, out: &mut dyn Write) -> Result<()> {
        self.engine.copy_out(&self.name, path, out)
    }

    /// Copies `path` out of the container as a tar stream and hands the stream to `read`; a
    /// failed copy is the error even when `read` failed too, as it explains that failure.
    pub fn read_out<T>(
        &self,
        path: &str,
        read: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<T> {
        self.engine.read_out(&self.name, path, read)
    }

    /// Starts the container attached, appends its output to `log`, and passes each line to
    /// `on_line`. Returns whether its command succeeded.
    pub fn run_logged(&self, log: &Path, on_line: impl FnMut(&str)) -> Result<bool> {
        self.engine.start_logged(&self.name, log, on_line)
    }

    /// Starts the container with the user's terminal attached to it (an interactive shell).
    pub fn attach(&self) -> Result<bool> {
        self.engine.attach(&self.name)
    }

    /// Commits the container as the image `tag`.
    pub fn commit(&self, tag: &str) -> Result<()> {
        self.engine.commit(self.sh, &self.name, tag)
    }

    /// Leaves the container in place (a failed stage's, for `shell --failed`) and returns its
    /// name.
    pub fn keep(mut self) -> String {
        self.kept = true;
        std::mem::take(&mut self.name)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.engine.remove(self.sh, &self.name);
        }
    }
}

/// A container's labels as `ps --format '{{json .Labels}}'` gives them: docker's is a JSON
/// string of `k=v` pairs joined by commas, podman's a JSON object.
fn parse_labels(json: &str) -> BTreeMap<String, String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
            .collect(),
        Ok(serde_json::Value::String(pairs)) => pairs
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_engine_names_the_command_and_the_check() {
        let sh = Shell::new().unwrap();
        let err = Engine::detect(&sh, Some("/nonexistent/docker"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/docker") && err.contains("docker info"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_podman_is_not_told_to_pass_engine_podman() {
        let sh = Shell::new().unwrap();
        let err = Engine::detect(&sh, Some("/nonexistent/podman"))
            .unwrap_err()
            .to_string();
        assert!(!err.contains("--engine podman"), "{err}");
        assert!(err.contains("`/nonexistent/podman info`"), "{err}");
        assert!(
            err.contains("\nhint: "),
            "the hint is not on its own line: {err}"
        );
    }

    #[test]
    fn a_stopped_engine_says_what_failed() {
        // A fake `docker` whose daemon is down, as the real CLI reports it.
        let dir = std::env::temp_dir().join(format!("pf-fake-docker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("docker");
        std::fs::write(&fake, "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\nexit 1\n").unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&fake).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let sh = Shell::new().unwrap();
        let err = Engine::detect(&sh, Some(fake.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("version` failed") && err.contains("Cannot connect to the Docker daemon"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fake engine that records each call's arguments, one line per call, and answers `start`
    /// with two lines and `exit_start`, and `cp` (into a container) with `exit_cp`.
    fn recording(dir: &Path, exit_start: u8, exit_cp: u8) -> (Engine, std::path::PathBuf) {
        let calls = dir.join("calls");
        let engine = Engine::fake(
            dir,
            &format!(
                "echo \"$*\" >> '{}'
case \"$1\" in
    start) echo one; echo two; exit {exit_start} ;;
    cp) cat > /dev/null; exit {exit_cp} ;;
esac
exit 0
",
                calls.display()
            ),
        );
        (engine, calls)
    }

    fn calls(file: &Path) -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "img".into(),
            command: vec!["true".into()],
            ..ContainerSpec::default()
        }
    }

    #[test]
    fn container_labels_read_the_same_from_docker_and_podman() {
        let docker = parse_labels(r#""org.python-fips.owner=host:12,org.python-fips.cache=/c""#);
        let podman =
            parse_labels(r#"{"org.python-fips.owner":"host:12","org.python-fips.cache":"/c"}"#);
        assert_eq!(docker, podman);
        assert_eq!(docker["org.python-fips.owner"], "host:12");
    }

    #[test]
    fn a_dropped_container_is_removed() {
        let dir = crate::testutil::TempDir::new("fake-docker-drop");
        let (engine, file) = recording(dir.path(), 0, 0);
        let sh = Shell::new().unwrap();
        let container = engine.container(&sh, &spec("c1")).unwrap();
        container.put_file("/", "f", b"x", 0o644).unwrap();
        drop(container);
        let calls = calls(&file);
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls[0].starts_with("create --name c1 "), "{calls:?}");
        assert_eq!(calls[1], "cp - c1:/");
        assert_eq!(calls[2], "rm --force --volumes c1");
    }

    #[test]
    fn a_kept_container_stays() {
        let dir = crate::testutil::TempDir::new("fake-docker-keep");
        let (engine, file) = recording(dir.path(), 0, 0);
        let sh = Shell::new().unwrap();
        let container = engine.container(&sh, &spec("c2")).unwrap();
        assert_eq!(container.keep(), "c2");
        let calls = calls(&file);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(!calls.iter().any(|c| c.starts_with("rm")), "{calls:?}");
    }

    #[test]
    fn an_error_through_the_question_mark_still_removes_the_container() {
        let dir = crate::testutil::TempDir::new("fake-docker-error");
        let (engine, file) = recording(dir.path(), 0, 1);
        let sh = Shell::new().unwrap();
        let stage = || -> Result<bool> {
            let container = engine.container(&sh, &spec("c3"))?;
            container.put_file("/", "f", b"x", 0o644)?;
            container.run_logged(&dir.path().join("log"), |_| {})
        };
        let err = stage().unwrap_err().to_string();
        assert!(err.contains("cp - c3:/` failed"), "{err}");
        let calls = calls(&file);
        assert!(!calls.iter().any(|c| c.starts_with("start")), "{calls:?}");
        assert_eq!(calls.last().unwrap(), "rm --force --volumes c3");
    }

    #[test]
    fn a_container_that_was_not_created_is_not_removed() {
        let dir = crate::testutil::TempDir::new("fake-docker-nocreate");
        let calls_file = dir.path().join("calls");
        let engine = Engine::fake(
            dir.path(),
            &format!(
                "echo \"$*\" >> '{}'\necho 'no such image' >&2\nexit 1\n",
                calls_file.display()
            ),
        );
        let sh = Shell::new().unwrap();
        let err = engine.container(&sh, &spec("c4")).unwrap_err().to_string();
        assert!(
            err.contains("create` of c4 from img failed: no such image"),
            "{err}"
        );
        assert_eq!(calls(&calls_file).len(), 1);
    }

    #[test]
    fn a_logged_run_passes_lines_on_writes_the_log_and_says_whether_it_succeeded() {
        for (exit, ok) in [(0, true), (3, false)] {
            let dir = crate::testutil::TempDir::new("fake-docker-run");
            let (engine, file) = recording(dir.path(), exit, 0);
            let sh = Shell::new().unwrap();
            let log = dir.path().join("run.log");
            let mut lines = Vec::new();
            let container = engine.container(&sh, &spec("c5")).unwrap();
            let ran = container
                .run_logged(&log, |l| lines.push(l.to_string()))
                .unwrap();
            drop(container);
            assert_eq!(ran, ok);
            assert_eq!(lines, ["one", "two"]);
            assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
            let calls = calls(&file);
            assert_eq!(calls[1], "start --attach c5");
            assert_eq!(calls[2], "rm --force --volumes c5");
        }
    }

    #[test]
    fn a_failed_copy_out_is_the_error_before_what_the_reader_made_of_it() {
        let dir = crate::testutil::TempDir::new("fake-docker-read");
        let engine = Engine::fake(
            dir.path(),
            "case \"$1\" in cp) printf 'abc'; echo 'no such path' >&2; exit 1 ;; esac\n",
        );
        let sh = Shell::new().unwrap();
        let container = engine.container(&sh, &spec("c6")).unwrap();
        let mut seen = String::new();
        let err = container
            .read_out("/x", |r| -> Result<()> {
                r.read_to_string(&mut seen)?;
                bail!("truncated")
            })
            .unwrap_err()
            .to_string();
        assert_eq!(seen, "abc");
        assert!(err.contains("cp c6:/x -` failed: no such path"), "{err}");
    }
}
