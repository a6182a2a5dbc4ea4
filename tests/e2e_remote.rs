//! End to end: a stage cache shared through a real registry, builds on a second engine, podman.
//!
//! Machine A is the shared cold build (`support::cold_build`), which gives every stage and its
//! builder image to the test registry. Machine B is a second Docker daemon in a privileged
//! container (its own storage, its own filesystem: nothing of this machine's can be bind-mounted
//! there) reached through `DOCKER_HOST`, with an empty local cache each time. The registry, the
//! daemon and podman are started by `tests/services.sh`, on loopback.
//!
//! What this costs: the second daemon's image (once per machine), B's pull of the builder image
//! and every stage (with its runtime image and `verify`), the python and finalize stages of a
//! patch change on B, and the fips-provider stage on podman. Both compiling stages start from A's
//! compiler cache (its reuse directory), so they are also the reproducibility checks across
//! engines and of the compiler cache: B's patch differs from A's only in a header line, so its
//! tree must be A's, which was compiled cold, and podman's fips.so and the provider release's
//! `openssl` must be A's byte for byte. `rebuild` of A's tarball on B's engine with an empty cache
//! compiles python and finalize from nothing and must give A's sha256; and podman makes the slim
//! base image again with mmdebstrap, which must be docker's by id, while B takes it from the
//! registry.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use support::*;

/// The second engine, started fresh once per process so that it holds no builder image: its
/// `DOCKER_HOST`.
fn second_engine() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        setup();
        let work = work();
        let work = work.to_str().unwrap();
        services(&["stop-dind", work]);
        services(&["dind", work, "debian:bookworm", "debian:bookworm-slim"])["DIND"].clone()
    })
}

/// A cache directory that holds nothing yet: a machine that never built.
fn empty_cache(name: &str) -> PathBuf {
    let dir = work().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An empty cache directory holding only A's reuse directory (compiler cache) of the stage
/// `stage`, for the same builder image: a new machine whose compiles of that stage are hits.
fn empty_cache_with_reuse(name: &str, stage: &str) -> PathBuf {
    let cache = empty_cache(name);
    std::fs::create_dir_all(cache.join("reuse")).unwrap();
    std::fs::copy(
        work().join("cache/CACHEDIR.TAG"),
        cache.join("CACHEDIR.TAG"),
    )
    .unwrap();
    let prefix = format!("{stage}-x86_64-");
    let reused: Vec<_> = std::fs::read_dir(work().join("cache/reuse"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    assert_eq!(reused.len(), 1, "{reused:?}");
    std::fs::copy(
        &reused[0],
        cache.join("reuse").join(reused[0].file_name().unwrap()),
    )
    .unwrap();
    cache
}

/// The last `Hits: N / M` count of ccache's statistics in the log of `stage`'s entry in `cache`:
/// how many compiles the stage took from the compiler cache.
fn compiler_cache_hits(cache: &Path, report: &serde_json::Value, stage: &str) -> u64 {
    let key = support::stage(report, stage)["key"]
        .as_str()
        .unwrap()
        .to_string();
    let meta = cache
        .join("stages")
        .join(format!("{stage}-{key}"))
        .join("meta.json");
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(meta).unwrap()).unwrap();
    let log = std::fs::read_to_string(meta["log"].as_str().unwrap()).unwrap();
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("Hits:"))
        .filter_map(|rest| rest.split('/').next()?.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no compiler cache statistics in {}", meta["log"]))
}

/// Runs `python` on the second engine with the cache `cache` and `extra` flags, sharing through
/// the test registry; calls `on_line` with each line it writes to stderr. Returns whether it
/// succeeded, everything it said, and its report.
fn run_on_b(
    cache: &Path,
    out_dir: &Path,
    extra: &[&str],
    mut on_line: impl FnMut(&str),
) -> (bool, String, Option<serde_json::Value>) {
    let registry = cache_registry();
    let mut flags = vec!["--cache-registry", registry.as_str()];
    flags.extend(extra);
    let args = python_args(out_dir, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = command(&args)
        .env("DOCKER_HOST", second_engine())
        .env("PYTHON_FIPS_CACHE", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut said = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut bytes = Vec::new();
    while stderr.read_until(b'\n', &mut bytes).unwrap() > 0 {
        let line = String::from_utf8_lossy(&bytes).trim_end().to_string();
        bytes.clear();
        on_line(&line);
        said.push_str(&line);
        said.push('\n');
    }
    let ok = child.wait().unwrap().success();
    said.push_str(&printed.join().unwrap());
    (ok, said, read_report(out_dir))
}

/// B's first run: an empty cache and an engine without the builder image, A's registry.
fn machine_b() -> &'static (serde_json::Value, String, f64) {
    static B: OnceLock<(serde_json::Value, String, f64)> = OnceLock::new();
    B.get_or_init(|| {
        cold_build();
        second_engine();
        let started = std::time::Instant::now();
        let (ok, said, report) =
            run_on_b(&empty_cache("cache-b"), &work().join("dist-b"), &[], |_| {});
        let seconds = started.elapsed().as_secs_f64();
        assert!(ok, "B's build failed:\n{said}");
        eprintln!("machine B: {seconds:.0} s\n{said}");
        (report.unwrap(), said, seconds)
    })
}

#[test]
fn an_empty_machine_on_a_second_engine_pulls_every_stage_and_ships_the_same_bytes() {
    let _g = serial();
    let a = cold_build();
    let (b, said, seconds) = machine_b();
    eprintln!(
        "A: {} ({:.0} s in all); B: {} ({seconds:.0} s)",
        a["sha256"], a["timings"]["seconds"], b["sha256"]
    );
    // Every stage came from the registry, checked against its digest; none ran on B.
    let registry = cache_registry();
    for stage in b["stages"].as_array().unwrap() {
        let origin = &stage["origin"];
        assert_eq!(origin["from"], "remote", "{stage:#}");
        assert_eq!(origin["remote"], registry.as_str());
        assert!(origin["digest"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(stage["cached"], true);
        assert_eq!(
            stage["key"],
            support::stage(a, stage["name"].as_str().unwrap())["key"]
        );
    }
    assert_eq!(
        stage_origins(b)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["openssl", "fips-provider", "python", "finalize"]
    );
    // So did the builder image: nothing was installed on B.
    assert!(
        said.lines()
            .any(|l| l.contains("builder") && l.contains(&format!("pulled from {registry}"))),
        "{said}"
    );
    assert!(
        !said
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains(&registry)),
        "{said}"
    );
    // The same bytes as A's, and B's runtime image passed verify on B's engine.
    assert_eq!(b["sha256"], a["sha256"]);
    assert_eq!(
        std::fs::read(b["artifact"].as_str().unwrap()).unwrap(),
        std::fs::read(a["artifact"].as_str().unwrap()).unwrap()
    );
    assert_eq!(b["verify"]["passed"], true, "{:#}", b["verify"]);
    // The records beside the tarball say where each stage came from; the tree's do not.
    let beside: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b["build_info"].as_str().unwrap()).unwrap()).unwrap();
    for stage in beside["stages"].as_array().unwrap() {
        assert_eq!(stage["origin"]["from"], "remote", "{beside:#}");
    }
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b["sbom"].as_str().unwrap()).unwrap()).unwrap();
    let from_registry = sbom["metadata"]["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .unwrap()
                .starts_with("python-fips:stage:")
                && p["value"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("registry {registry}@sha256:"))
        })
        .count();
    assert_eq!(from_registry, 4, "{:#}", sbom["metadata"]);
}

#[test]
fn a_patch_change_on_the_second_engine_runs_there_and_outlives_the_registry() {
    let _g = serial();
    let a = cold_build();
    machine_b();
    // A header line in the patch: new patch bytes, the same sources.
    let patches = work().join(format!("patches-remote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&patches);
    std::fs::create_dir_all(patches.join("3.13")).unwrap();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut changed = format!("second engine check {nonce}\n").into_bytes();
    changed.extend(std::fs::read(root().join("patches/3.13/fips.patch")).unwrap());
    std::fs::write(patches.join("3.13/fips.patch"), &changed).unwrap();

    // A new machine, but with A's compiler cache for the python stage: B's compiles are cache
    // hits, and the tree must still be A's.
    let cache = empty_cache_with_reuse("cache-b-patched", "python");

    // The registry stops once the python stage has started on B, and runs again after this
    // test whatever happens (the other tests use it).
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            services(&["registry", work().to_str().unwrap()]);
        }
    }
    let _restart = Restart;
    let mut stopped = false;
    let out_dir = work().join("dist-b-patched");
    let (ok, said, report) = run_on_b(
        &cache,
        &out_dir,
        // B's first run made and verified its runtime image on this engine already.
        &["--patches", patches.to_str().unwrap(), "--no-verify"],
        |line| {
            if !stopped && line.starts_with("python ") && line.contains(" running ") {
                services(&["stop-registry", work().to_str().unwrap()]);
                stopped = true;
            }
        },
    );
    std::fs::remove_dir_all(&patches).unwrap();
    assert!(ok, "the build failed:\n{said}");
    assert!(stopped, "the python stage never started:\n{said}");
    let report = report.unwrap();
    let from: Vec<(String, String)> = stage_origins(&report);
    assert_eq!(
        from,
        [
            ("openssl".to_string(), "remote".to_string()),
            ("fips-provider".to_string(), "remote".to_string()),
            ("python".to_string(), "ran".to_string()),
            ("finalize".to_string(), "ran".to_string()),
        ],
        "{said}"
    );
    // One warning, naming the registry and the reason; the build went on here.
    let registry = cache_registry();
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("warning:") && l.contains(&registry))
        .collect();
    assert_eq!(warnings.len(), 1, "{said}");
    let python_key = support::stage(&report, "python")["key"].as_str().unwrap();
    assert!(
        warnings[0].contains(&format!("did not take python-{}", &python_key[..12]))
            && warnings[0].contains("not asked again"),
        "{}",
        warnings[0]
    );
    // Its log holds ccache's statistics (`Hits: N / M`) for the make that just ran.
    let hits = compiler_cache_hits(&cache, &report, "python");
    assert!(
        hits > 100,
        "only {hits} compiler cache hits in python's log"
    );
    // Built on another engine from the compiler cache, the tree is A's (built cold) but for
    // the records of the patch's bytes.
    let differ: BTreeSet<String> = {
        let ours = files_in(Path::new(report["artifact"].as_str().unwrap()), |_| true);
        let theirs = files_in(Path::new(a["artifact"].as_str().unwrap()), |_| true);
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>()
        );
        ours.iter()
            .filter(|(path, bytes)| theirs[*path] != **bytes)
            .map(|(path, _)| path.clone())
            .collect()
    };
    assert_eq!(
        differ,
        BTreeSet::from([
            "opt/python-fips/BUILD-INFO.json".to_string(),
            "opt/python-fips/SBOM.cdx.json".to_string()
        ]),
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn podman_loads_the_shared_builder_and_builds_the_fips_provider_to_the_same_bytes() {
    let _g = serial();
    let a = cold_build();
    let (engine_flags, conf) = podman();
    // A repository of its own, so that what podman pushes is seen by no other test: A fills it
    // from its cache, and then it loses its fips-provider entry, which podman must build.
    let repository = "python-fips-podman";
    let registry = format!("{}/{repository}", support::registry());
    build_to(
        &work().join("dist-podman-seed"),
        &["--cache-registry", &registry, "--no-verify"],
    );
    let key = support::stage(a, "fips-provider")["key"]
        .as_str()
        .unwrap()
        .to_string();
    delete_from_registry(repository, &format!("fips-provider-{key}"));
    let out_dir = work().join("dist-podman");
    let mut flags = engine_flags.to_vec();
    flags.extend(["--cache-registry", &registry]);
    let args = python_args(&out_dir, &flags);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A's compiler cache for the stage: podman's compiles are hits, its links and the module's
    // assembly are its own, and fips.so must still be A's (compiled cold) byte for byte.
    let cache = empty_cache_with_reuse("cache-podman", "fips-provider");
    let out = command(&args)
        .env("PYTHON_FIPS_CACHE", &cache)
        .env(conf.0, conf.1)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let report = read_report(&out_dir).unwrap();
    assert_eq!(
        stage_origins(&report),
        [
            ("openssl".to_string(), "remote".to_string()),
            ("fips-provider".to_string(), "ran".to_string()),
            ("python".to_string(), "remote".to_string()),
            ("finalize".to_string(), "remote".to_string()),
        ],
        "{said}"
    );
    assert_eq!(
        support::stage(&report, "fips-provider")["key"],
        key.as_str()
    );
    // podman started without the builder (tests/services.sh removes it): it loaded A's.
    assert!(
        said.lines()
            .any(|l| l.starts_with("builder ") && l.contains(&format!("pulled from {registry}"))),
        "{said}"
    );
    let hits = compiler_cache_hits(&cache, &report, "fips-provider");
    assert!(
        hits > 1000,
        "only {hits} compiler cache hits in fips-provider's log"
    );
    assert_eq!(report["sha256"], a["sha256"], "{said}");
    assert_eq!(report["verify"]["passed"], true, "{:#}", report["verify"]);
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// Deletes the tag `tag`'s manifest from `repository` of the test registry, as an operator
/// cleaning it would.
fn delete_from_registry(repository: &str, tag: &str) {
    let url = format!("http://{}/v2/{repository}/manifests/{tag}", registry());
    let client = reqwest::blocking::Client::new();
    let resp = client
        .head(&url)
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    let Some(digest) = resp.headers().get("Docker-Content-Digest") else {
        panic!("the registry has no {tag} to delete: {}", resp.status());
    };
    let digest = digest.to_str().unwrap().to_string();
    let url = format!("http://{}/v2/{repository}/manifests/{digest}", registry());
    let resp = client.delete(&url).send().unwrap();
    assert!(
        resp.status().is_success(),
        "DELETE {url}: {}",
        resp.status()
    );
}

/// The id of `image` in podman as `podman()` configures it, as `sha256:<hex>`.
fn podman_image_id(image: &str) -> String {
    let out = podman_cli(&["image", "inspect", "--format", "{{.Id}}", image]);
    assert!(out.status.success(), "{}", text(&out));
    format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim())
}

/// The id of `image` in the Docker engine at `host` (this machine's when `None`).
fn docker_image_id(host: Option<&str>, image: &str) -> String {
    let mut args = host.map_or(vec![], |h| vec!["--host", h]);
    args.extend(["image", "inspect", "--format", "{{.Id}}", image]);
    let out = docker(&args);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn base_images_made_on_two_engines_are_one_image_and_the_registry_gives_it_to_a_third() {
    let _g = serial();
    setup();
    let slim = "debian:bookworm-slim";
    let made_here = docker_image_id(None, slim);
    // podman makes it again from the mirror (`--force`: services.sh loaded this machine's copy
    // into podman), a second mmdebstrap run on a second engine: the same image id.
    let (engine_flags, conf) = podman();
    let mut args = vec!["base-image", "--suite", "bookworm", "--slim", "--force"];
    args.extend(engine_flags);
    let out = command(&args).env(conf.0, conf.1).output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("mmdebstrap bookworm (amd64)"), "{said}");
    assert_eq!(podman_image_id(slim), made_here, "{said}");
    // Its packages are recorded in the image.
    let out = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        slim,
    ]);
    let labels: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = labels["org.python-fips.base.packages"].as_str().unwrap();
    assert!(
        packages.split(' ').any(|p| p.starts_with("libc6=")),
        "{packages}"
    );
    // This machine gives it to the registry; the second daemon, which never made it, takes it
    // from there under a name of its own.
    let registry = cache_registry();
    let args = [
        "base-image",
        "--suite",
        "bookworm",
        "--slim",
        "--cache-registry",
        &registry,
    ];
    let out = xtask(&args);
    assert!(out.status.success(), "{}", text(&out));
    let shared = "python-fips-test/shared-base:bookworm-slim";
    let out = command(&[&args[..], &["--tag", shared]].concat())
        .env("DOCKER_HOST", second_engine())
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("pulled from {registry}")), "{said}");
    assert!(!said.contains("mmdebstrap bookworm"), "{said}");
    assert_eq!(docker_image_id(Some(second_engine()), shared), made_here);
}

#[test]
fn a_rebuild_of_the_cold_builds_record_on_a_fresh_machine_gives_its_sha256() {
    let _g = serial();
    let a = cold_build();
    let mirror = setup();
    let registry = cache_registry();
    let report = work().join("rebuild-report.json");
    let _ = std::fs::remove_file(&report);
    // Machine B's engine and an empty cache: the base image is there (by id), the builder comes
    // from the registry, openssl and fips-provider by their recorded keys; python and finalize
    // compile from nothing (a fresh cache's compiler cache is empty). B holds no builder before
    // or after, whichever of B's tests runs first (machine B's first run must pull it too).
    remove_builders_on_b();
    let out = command(&[
        "rebuild",
        a["artifact"].as_str().unwrap(),
        "--mirror",
        mirror.to_str().unwrap(),
        "--cache-registry",
        &registry,
        "--reuse-stage",
        "openssl",
        "--reuse-stage",
        "fips-provider",
        "--report",
        report.to_str().unwrap(),
    ])
    .env("DOCKER_HOST", second_engine())
    .env("PYTHON_FIPS_CACHE", empty_cache("cache-rebuild"))
    .output()
    .unwrap();
    remove_builders_on_b();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let outcome: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(outcome["identical"], true, "{outcome:#}");
    assert_eq!(outcome["sha256"], a["sha256"], "{outcome:#}");
    assert_eq!(
        outcome["recompiled"],
        serde_json::json!(["python", "finalize"]),
        "{said}"
    );
    assert_eq!(
        outcome["reused"],
        serde_json::json!(["openssl", "fips-provider"]),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("builder ") && l.contains(&format!("pulled from {registry}"))),
        "{said}"
    );
}

/// Removes every builder image from the second engine.
fn remove_builders_on_b() {
    let host = second_engine();
    let out = docker(&[
        "--host",
        host,
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let builders: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("python-fips-builder"))
        .map(String::from)
        .collect();
    if !builders.is_empty() {
        let mut args = vec!["--host", host, "rmi", "--force"];
        args.extend(builders.iter().map(String::as_str));
        let out = docker(&args);
        assert!(out.status.success(), "{}", text(&out));
    }
}
