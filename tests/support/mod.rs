//! Shared by the end-to-end tests: machine setup, running the xtask, the shared cold build.
//!
//! The configuration is the one obtainable offline here: CPython 3.13.15, OpenSSL 3.5.7 for the
//! libraries, and the FIPS provider from OpenSSL 3.1.2 (CMVP #4985, the recipes' provider), so the
//! separate-provider path runs. The 3.1.2 release tarball cannot be downloaded here: the tests take
//! its tree from the openssl-src crate, a test source of tests/sources.toml with a version of its
//! own (`3.1.2-openssl-src`), which every run of the xtask gets through PYTHON_FIPS_SOURCE_CATALOG.
//! Tests share one cache and one cold build, and take turns (a build holds the cache lock anyway).

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use xtask::engine::{ContainerSpec, Engine};

pub const VERSION: [&str; 8] = [
    "--version",
    "3.13",
    "--python",
    "3.13.15",
    "--openssl",
    "3.5.7",
    "--fips-provider",
    PROVIDER,
];

/// The tests' FIPS provider: OpenSSL 3.1.2's tree, from the test catalog.
pub const PROVIDER: &str = "3.1.2-openssl-src";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where the tests keep their cache, mirror and outputs (`target/e2e`, or PYTHON_FIPS_TEST_DIR).
pub fn work() -> PathBuf {
    std::env::var_os("PYTHON_FIPS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/e2e"))
}

pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs mmdebstrap if needed, fills the mirror and makes the base images; once per process.
pub fn setup() -> &'static Path {
    static MIRROR: OnceLock<PathBuf> = OnceLock::new();
    MIRROR.get_or_init(|| {
        let mirror = work().join("mirror");
        let status = Command::new("bash")
            .arg(root().join("tests/setup.sh"))
            .arg(&mirror)
            .status()
            .unwrap();
        assert!(status.success(), "tests/setup.sh failed");
        // The builders' base and the runtime images' slim one.
        for extra in [&[][..], &["--slim"]] {
            let mut args = vec!["base-image", "--suite", "bookworm"];
            args.extend(extra);
            let out = xtask(&args);
            assert!(out.status.success(), "base-image failed:\n{}", text(&out));
        }
        mirror
    })
}

pub fn xtask(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args)
        .env("PYTHON_FIPS_CACHE", work().join("cache"))
        .env(
            "PYTHON_FIPS_SOURCE_CATALOG",
            root().join("tests/sources.toml"),
        )
        .stdin(Stdio::null());
    c
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python` with the test configuration and `extra` flags; returns the parsed `--report`.
pub fn build(extra: &[&str]) -> serde_json::Value {
    build_to(&work().join("dist"), extra)
}

/// Like `build`, with the artifacts in `out_dir` (for builds whose tarball must not replace the
/// shared one: the artifact name does not say which patch bytes went in).
pub fn build_to(out_dir: &Path, extra: &[&str]) -> serde_json::Value {
    let (out, report) = run_python(out_dir, extra);
    assert!(
        out.status.success(),
        "python {extra:?} failed:
{}",
        text(&out)
    );
    report.expect("a successful run writes its report")
}

/// `python` with the test configuration and `extra` flags, successful or not: its output and
/// the parsed `--report` if it wrote one.
pub fn run_python(out_dir: &Path, extra: &[&str]) -> (Output, Option<serde_json::Value>) {
    let args = python_args(out_dir, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = xtask(&args);
    (out, read_report(out_dir))
}

/// The arguments of `python` with the test configuration, its report and outputs in `out_dir`,
/// and `extra` flags.
pub fn python_args(out_dir: &Path, extra: &[&str]) -> Vec<String> {
    build_command_args("python", out_dir, extra)
}

/// Like `python_args`, for another command that takes the build's flags (`image`, `publish`).
pub fn build_command_args(command: &str, out_dir: &Path, extra: &[&str]) -> Vec<String> {
    let mirror = setup();
    let report = report_path(out_dir);
    let _ = std::fs::remove_file(&report);
    let mut args: Vec<&str> = vec![command];
    args.extend(VERSION);
    args.extend([
        "--mirror",
        mirror.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    args.extend(extra);
    args.into_iter().map(String::from).collect()
}

/// Where `python_args` puts the report of a run whose outputs go to `out_dir`.
fn report_path(out_dir: &Path) -> PathBuf {
    let name = out_dir.file_name().unwrap().to_string_lossy();
    work().join(format!("report-{name}-{}.json", std::process::id()))
}

/// The report of the last run with its outputs in `out_dir`, if it wrote one.
pub fn read_report(out_dir: &Path) -> Option<serde_json::Value> {
    std::fs::read(report_path(out_dir))
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
}

/// (stage name, cached) for each stage of a report.
pub fn stages(report: &serde_json::Value) -> Vec<(String, bool)> {
    per_stage(report, |s| s["cached"].as_bool().unwrap())
}

/// (stage name, where it came from: `ran`, `local` or `remote`) for each stage of a report.
pub fn stage_origins(report: &serde_json::Value) -> Vec<(String, String)> {
    per_stage(report, |s| {
        s["origin"]["from"].as_str().unwrap_or("none").to_string()
    })
}

/// (stage name, `what` of the stage) for each stage of a report.
fn per_stage<T>(
    report: &serde_json::Value,
    what: impl Fn(&serde_json::Value) -> T,
) -> Vec<(String, T)> {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), what(s)))
        .collect()
}

/// The stage `name` of a report (or a `--dry-run` plan); panics naming it when it is missing.
pub fn stage<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

/// The cold build of the test configuration, shared by the tests that need a tarball. It gives
/// what it builds (or finds in its cache) to the test registry: it is machine A of
/// `e2e_remote.rs`.
pub fn cold_build() -> &'static serde_json::Value {
    static REPORT: OnceLock<serde_json::Value> = OnceLock::new();
    REPORT.get_or_init(|| build(&["--cache-registry", &cache_registry()]))
}

/// The test registry's repository for stage entries: `127.0.0.1:<port>/python-fips-cache`.
pub fn cache_registry() -> String {
    format!("{}/python-fips-cache", registry())
}

/// The test registry (`host:port`), started by `tests/services.sh` once per process. It keeps
/// running after the tests, on loopback, with its storage under `work()`.
pub fn registry() -> &'static str {
    static REGISTRY: OnceLock<String> = OnceLock::new();
    REGISTRY.get_or_init(|| services(&["registry", work().to_str().unwrap()])["REGISTRY"].clone())
}

/// Podman as the tests run it (its configuration written and the base image loaded by
/// `tests/services.sh`): the flags that select it and the environment variable it needs.
pub fn podman() -> ([&'static str; 2], (&'static str, String)) {
    let conf = services(&[
        "podman",
        work().to_str().unwrap(),
        "debian:bookworm",
        "debian:bookworm-slim",
    ]);
    (
        ["--engine", "podman"],
        ("CONTAINERS_CONF", conf["CONTAINERS_CONF"].clone()),
    )
}

/// Runs podman as `podman()` configures it.
pub fn podman_cli(args: &[&str]) -> Output {
    let (_, (var, conf)) = podman();
    Command::new("podman")
        .args(args)
        .env(var, conf)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `tests/services.sh` with `args` and returns the `KEY=VALUE` lines it prints.
pub fn services(args: &[&str]) -> std::collections::BTreeMap<String, String> {
    let out = Command::new("bash")
        .arg(root().join("tests/services.sh"))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "tests/services.sh {args:?} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// skopeo, installed by `tests/services.sh` if it is missing.
pub fn skopeo(args: &[&str]) -> Output {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        services(&["skopeo"]);
    });
    Command::new("skopeo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Unpacks `tarball` at / in a new debian:bookworm container, puts `files` in /tmp, and runs
/// `cmd` there.
pub fn in_fresh_container(tarball: &Path, files: &[(&str, &[u8])], cmd: &[&str]) -> Output {
    in_fresh_container_with(&[tarball], files, cmd)
}

/// The development tarball beside a runtime one (`<artifact>-dev.tar.gz`).
pub fn dev_tarball_of(runtime: &Path) -> PathBuf {
    let name = runtime.file_name().unwrap().to_str().unwrap();
    runtime.with_file_name(name.replace(".tar.gz", "-dev.tar.gz"))
}

/// Like `in_fresh_container`, with several tarballs unpacked in order (the development tree
/// over the runtime one).
pub fn in_fresh_container_with(
    tarballs: &[&Path],
    files: &[(&str, &[u8])],
    cmd: &[&str],
) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let sh = xshell::Shell::new().unwrap();
    let engine = Engine::detect(&sh, Some("docker")).unwrap();
    let container = engine
        .container(
            &sh,
            &ContainerSpec {
                name: format!("python-fips-e2e-{}", std::process::id()),
                image: "debian:bookworm".into(),
                // stderr joins stdout inside, as the engine hands only stdout to `run_logged`.
                command: ["sh", "-c", "exec \"$@\" 2>&1", "sh"]
                    .iter()
                    .chain(cmd)
                    .map(|c| c.to_string())
                    .collect(),
                ..ContainerSpec::default()
            },
        )
        .unwrap();
    for tarball in tarballs {
        container
            .copy_in("/", |w| {
                let mut gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball)?);
                std::io::copy(&mut gz, w)?;
                Ok(())
            })
            .unwrap_or_else(|e| {
                panic!(
                    "cannot unpack {} into a container: {e:#}",
                    tarball.display()
                )
            });
    }
    for (name, bytes) in files {
        container.put_file("/tmp", name, bytes, 0o644).unwrap();
    }
    // The command's output, stdout and stderr together.
    let log = work().join(format!("container-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let mut said = String::new();
    let ok = container
        .run_logged(&log, |line| {
            said.push_str(line);
            said.push('\n');
        })
        .unwrap();
    let _ = std::fs::remove_file(&log);
    Output {
        status: std::process::ExitStatus::from_raw(if ok { 0 } else { 1 << 8 }),
        stdout: said.into_bytes(),
        stderr: Vec::new(),
    }
}

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    xtask::digest::hex(&sha2::Sha256::digest(bytes))
}

/// The regular files of a `.tar.gz` whose path satisfies `keep`, with their bytes.
pub fn files_in(
    tarball: &Path,
    keep: impl Fn(&str) -> bool,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(tarball).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.header().entry_type().is_file() && keep(&path) {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            out.insert(path, data);
        }
    }
    out
}

/// The real uv (tests/uv.sh fetches it from PyPI, pinned by sha256); a pure-Python wheel lies
/// next to it.
pub fn uv_binary() -> PathBuf {
    let out = Command::new("bash")
        .arg(root().join("tests/uv.sh"))
        .arg(work().join("uv-tools"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "tests/uv.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// uv with everything it writes kept under `home`: no user configuration, no links in ~/.local.
pub fn uv(uv: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(uv)
        .args(args)
        .env("UV_NO_CONFIG", "1")
        .env("UV_CACHE_DIR", home.join("cache"))
        .env("UV_PYTHON_INSTALL_DIR", home.join("python"))
        .env("UV_PYTHON_BIN_DIR", home.join("bin"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("UV_PYTHON_DOWNLOADS", "manual")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "uv {args:?} failed:\n{}", text(&out));
    out
}

/// What an installed tree's interpreter reports, as one JSON line: FIPS mode, MD5, its OpenSSL,
/// the libcrypto it mapped.
pub const TREE_PROBE: &str = r#"
import hashlib, json, ssl
try:
    hashlib.md5(b"")
    md5 = "allowed"
except ValueError as e:
    md5 = "refused: " + str(e)
maps = open("/proc/self/maps").read().splitlines()
print(json.dumps({
    "fips": ssl.FIPS_mode(),
    "md5": md5,
    "openssl": ssl.OPENSSL_VERSION,
    "libcrypto": sorted({l.split(None, 5)[5] for l in maps if "/libcrypto" in l}),
}))
"#;

/// `cargo xtask channel` of `tarballs` into `work()/<dir>`, served at the root of a loopback web
/// server: the server (it serves while it lives), the URL of downloads.json and its content.
pub fn served_channel(
    dir: &str,
    tarballs: &[&Path],
) -> (xtask::testutil::Server, String, serde_json::Value) {
    let server = xtask::testutil::Server::start();
    let site = work().join(dir);
    let _ = std::fs::remove_dir_all(&site);
    let mut args = vec!["channel"];
    args.extend(tarballs.iter().map(|t| t.to_str().unwrap()));
    let url = server.url();
    args.extend(["--out", site.to_str().unwrap(), "--base-url", &url]);
    let out = xtask(&args);
    assert!(out.status.success(), "channel failed:\n{}", text(&out));
    for entry in std::fs::read_dir(&site).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = std::fs::read(&path).unwrap();
        server.route(
            &format!("/{name}"),
            xtask::testutil::Behaviour::Serve(bytes),
        );
    }
    let json =
        serde_json::from_slice(&std::fs::read(site.join("downloads.json")).unwrap()).unwrap();
    (server, format!("{url}/downloads.json"), json)
}

/// `uv python install <key>` from the channel at `json_url` into a fresh `home`; returns the
/// installed tree.
pub fn uv_install(uv_bin: &Path, home: &Path, json_url: &str, key: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(home);
    std::fs::create_dir_all(home).unwrap();
    uv(
        uv_bin,
        home,
        &[
            "python",
            "install",
            "--python-downloads-json-url",
            json_url,
            key,
        ],
    );
    home.join("python").join(key)
}
