//! End to end: real Docker, real upstream tarballs (from Debian source packages), real builds.
//!
//! The container pipeline: the tarball, the stage cache, patch changes and killed runs.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use object::Object;

use support::*;
use xtask::testutil::{Behaviour, Server, TempDir};

/// The regular files of a `.tar.gz`, with their bytes.
fn regular_files(tarball: &Path) -> BTreeMap<String, Vec<u8>> {
    let file = std::fs::File::open(tarball).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            out.insert(path, data);
        }
    }
    out
}

/// The bytes of the file `path` in a tar.
fn file_in_tar<R: Read>(mut archive: tar::Archive<R>, path: &str) -> Vec<u8> {
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == path {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            return data;
        }
    }
    panic!("no {path} in the archive");
}

#[test]
fn build_gives_a_tarball_whose_python_uses_its_own_openssl() {
    let _g = serial();
    let report = cold_build();
    let tarball = PathBuf::from(report["artifact"].as_str().unwrap());
    let name = tarball.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        name,
        "python-fips-3.13.15-openssl-3.5.7-fips-3.1.2-openssl-src-linux-x86_64.tar.gz"
    );
    let sha = std::fs::read_to_string(tarball.with_file_name(format!("{name}.sha256"))).unwrap();
    assert!(sha.starts_with(report["sha256"].as_str().unwrap()));

    let dev = dev_tarball_of(&tarball);
    assert_eq!(dev, PathBuf::from(report["dev_artifact"].as_str().unwrap()));
    let dev_name = dev.file_name().unwrap().to_str().unwrap();
    let dev_sha =
        std::fs::read_to_string(dev.with_file_name(format!("{dev_name}.sha256"))).unwrap();
    assert!(dev_sha.starts_with(report["dev_sha256"].as_str().unwrap()));

    let runtime_files = regular_files(&tarball);
    let dev_files = regular_files(&dev);
    for want in [
        "opt/python-fips/bin/python3.13",
        "opt/python-fips/lib/ossl-modules/fips.so",
        "opt/python-fips/ssl/openssl.cnf",
        "opt/python-fips/ssl/fipsmodule.cnf",
        "opt/python-fips/bin/python-fips-setup",
        "opt/python-fips/bin/openssl",
        "opt/python-fips/lib/libcrypto.so.3",
        "opt/python-fips/lib/python3.13/hashlib.py",
        "opt/python-fips/BUILD-INFO.json",
        // The 3.1.2 provider differs from the 3.5.7 libraries: its own release's openssl.
        "opt/python-fips/libexec/openssl-fipsinstall",
        "opt/python-fips/SBOM.cdx.json",
    ] {
        assert!(
            runtime_files.contains_key(want),
            "{want} is not in the runtime tarball"
        );
    }
    // Written by 3.1.2's own fipsinstall: the fields of its security policy, and not the
    // install-status of a 3.0.x module (a FIPS 140-3 module self-tests on every load).
    let cnf =
        String::from_utf8(runtime_files["opt/python-fips/ssl/fipsmodule.cnf"].clone()).unwrap();
    let has = |field: &str| cnf.lines().any(|l| l.trim_start().starts_with(field));
    for field in [
        "activate",
        "conditional-errors",
        "security-checks",
        "module-mac",
    ] {
        assert!(has(field), "fipsmodule.cnf has no {field}:\n{cnf}");
    }
    assert!(!has("install-status"), "{cnf}");
    for want in [
        "opt/python-fips/include/python3.13/Python.h",
        "opt/python-fips/include/openssl/evp.h",
        "opt/python-fips/lib/python3.13/config-3.13-x86_64-linux-gnu/libpython3.13.a",
        "opt/python-fips/lib/python3.13/config-3.13-x86_64-linux-gnu/Makefile",
        "opt/python-fips/lib/python3.13/test/test_hashlib.py",
    ] {
        assert!(
            dev_files.contains_key(want),
            "{want} is not in the development tarball"
        );
    }
    // OpenSSL comes as shared libraries only: an extension built against the tree links the
    // tree's libcrypto, never a copy of it.
    for archive in ["lib/libcrypto.a", "lib/libssl.a"] {
        let path = format!("opt/python-fips/{archive}");
        assert!(
            !runtime_files.contains_key(&path) && !dev_files.contains_key(&path),
            "{path} is in a tarball"
        );
    }
    for path in runtime_files.keys() {
        assert!(!dev_files.contains_key(path), "{path} is in both tarballs");
        assert!(
            !path.contains("/include/")
                && !path.contains("/lib/python3.13/test/")
                && !path.ends_with(".a"),
            "{path} is development material in the runtime tarball"
        );
    }

    // fips.so is shipped exactly as the fips-provider stage built it: never stripped, never
    // touched (its integrity check covers its bytes).
    let provider = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "fips-provider")
        .unwrap();
    let output = work().join(format!(
        "cache/stages/fips-provider-{}/output.tar",
        provider["key"].as_str().unwrap()
    ));
    let built = file_in_tar(
        tar::Archive::new(std::fs::File::open(&output).unwrap()),
        "python-fips/lib/ossl-modules/fips.so",
    );
    assert_eq!(
        sha256_hex(&runtime_files["opt/python-fips/lib/ossl-modules/fips.so"]),
        sha256_hex(&built),
        "fips.so in the tarball is not the fips-provider stage's output {}",
        output.display()
    );

    // Programs and shared libraries are stripped; their debug information is in the
    // development tarball under its build id.
    for path in [
        "opt/python-fips/bin/python3.13",
        "opt/python-fips/lib/libcrypto.so.3",
        "opt/python-fips/lib/python3.13/lib-dynload/_ssl.cpython-313-x86_64-linux-gnu.so",
    ] {
        let file = object::File::parse(runtime_files[path].as_slice()).unwrap();
        assert!(
            file.section_by_name(".debug_info").is_none() && file.symbol_table().is_none(),
            "{path} is not stripped"
        );
        let id: String = file
            .build_id()
            .unwrap()
            .unwrap_or_else(|| panic!("{path} has no build id"))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let debug = format!(
            "opt/python-fips/lib/debug/.build-id/{}/{}.debug",
            &id[..2],
            &id[2..]
        );
        let debug = dev_files
            .get(&debug)
            .unwrap_or_else(|| panic!("no {debug} for {path} in the development tarball"));
        let debug = object::File::parse(debug.as_slice()).unwrap();
        // What strip took: the symbol table always, and DWARF where the build made it
        // (CPython compiles with -g; OpenSSL's default flags have none).
        assert!(
            debug.symbol_table().is_some(),
            "{path}'s debug file has no symbol table"
        );
        if path.contains("python3.13") {
            assert!(
                debug.section_by_name(".debug_info").is_some(),
                "{path}'s debug file has no DWARF"
            );
        }
    }

    // A fresh container from the plain base image: nothing but the tree.
    let run = in_fresh_container(
        &tarball,
        &[],
        &[
            "/opt/python-fips/bin/python3",
            "-c",
            "import ssl; print(ssl.OPENSSL_VERSION)",
        ],
    );
    assert!(run.status.success(), "{}", text(&run));
    let version = String::from_utf8_lossy(&run.stdout);
    assert!(
        version.starts_with("OpenSSL 3.5.7 "),
        "ssl.OPENSSL_VERSION is {version:?}"
    );
}

#[test]
fn second_run_is_all_cached_and_a_no_op_run_rewrites_nothing() {
    let _g = serial();
    cold_build();
    let report = build(&[]);
    for (name, cached) in stages(&report) {
        assert!(cached, "stage {name} ran again although nothing changed");
    }
    assert_eq!(report["sha256"], cold_build()["sha256"]);
    // After a run that found everything cached, another leaves every file of the artifact in
    // the output directory as it was: the tarballs, checksums, SBOM, record and verdict.
    let artifact = Path::new(report["artifact"].as_str().unwrap());
    let name = artifact.file_name().unwrap().to_string_lossy();
    let stem = name.trim_end_matches(".tar.gz");
    let before = written_files(&work().join("dist"), stem);
    assert!(
        before.keys().any(|f| f.ends_with(".verify.json")),
        "the run wrote no verdict: {before:?}"
    );
    let again = build(&[]);
    assert_eq!(again["verify"]["cached"], true);
    assert_eq!(written_files(&work().join("dist"), stem), before);
}

/// Each file in `dir` whose name begins with `stem`, with its inode and modification time.
fn written_files(dir: &Path, stem: &str) -> BTreeMap<String, (u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(stem))
        .map(|e| {
            let meta = e.metadata().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, (meta.ino(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect()
}

#[test]
fn one_openssl_build_serves_every_cpython_release_that_pins_it() {
    let _g = serial();
    let cold = cold_build();
    // Another minor and release (another SOURCE_DATE_EPOCH) with the same OpenSSL pins: only its
    // python and finalize stages would run. --dry-run plans and runs nothing.
    let mirror = setup().to_str().unwrap().to_string();
    let plan = work().join("plan-3.11.json");
    let out = xtask(&[
        "python",
        "--version",
        "3.11",
        "--python",
        "3.11.2",
        "--openssl",
        "3.5.7",
        "--fips-provider",
        PROVIDER,
        "--mirror",
        &mirror,
        "--dry-run",
        "--report",
        plan.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let key = |report: &serde_json::Value, name: &str| stage(report, name)["key"].clone();
    assert_eq!(
        stages(&plan),
        [
            ("openssl".to_string(), true),
            ("fips-provider".to_string(), true),
            ("python".to_string(), false),
            ("finalize".to_string(), false),
        ],
        "{}",
        text(&out)
    );
    for name in ["openssl", "fips-provider"] {
        assert_eq!(key(&plan, name), key(cold, name), "{name}");
    }
    // The report says where each output came from; a stage that would run has no origin yet.
    let origin = |name: &str| stage(&plan, name)["origin"].clone();
    assert_eq!(origin("openssl"), serde_json::json!({"from": "local"}));
    assert_eq!(origin("python"), serde_json::Value::Null);
    assert!(
        text(&out).contains("python         would run"),
        "{}",
        text(&out)
    );
    // The tests' provider is the 3.1.2 tree of a crate: every run says it is not for shipping.
    assert!(
        text(&out)
            .contains("warning: the FIPS provider is built from openssl-src-300.1.3+3.1.2.crate")
            && text(&out).contains("never to be shipped"),
        "{}",
        text(&out)
    );

    // A provider no certificate covers builds too, with a warning naming the validated one. The
    // 3.0.20 release is not built in the tests: the plan is enough to show the warning.
    let mut args = vec!["python"];
    args.extend(VERSION.map(|a| if a == PROVIDER { "3.0.20" } else { a }));
    args.extend(["--mirror", &mirror, "--dry-run"]);
    let out = xtask(&args);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("warning: the FIPS provider 3.0.20 is not a CMVP-validated module")
            && said.contains("--fips-provider 3.1.2 (#4985, FIPS 140-3, active until 2030-03-10)"),
        "{said}"
    );
}

#[test]
fn patches_apply_to_every_obtainable_release_and_every_cached_pinned_one() {
    let _g = serial();
    let mirror = setup().to_str().unwrap().to_string();
    let mut versions = vec![
        "3.11.2".to_string(),
        "3.13.5".to_string(),
        "3.13.15".to_string(),
    ];
    // The recipes' pinned releases are not obtainable here; they are checked when a cache has them.
    for minor in ["3.11", "3.12", "3.13", "3.14"] {
        let recipe = std::fs::read_to_string(root().join(format!("recipes/{minor}.toml"))).unwrap();
        let pinned = recipe
            .lines()
            .find_map(|l| l.strip_prefix("python = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let listing = xtask(&["recipes"]);
        if text(&listing)
            .lines()
            .any(|l| l.contains(&format!("{pinned} (cached)")))
        {
            versions.push(pinned);
        }
    }
    for version in versions {
        let out = xtask(&["prepare", "--version", &version, "--mirror", &mirror]);
        assert!(
            out.status.success(),
            "the patches do not apply to {version}:\n{}",
            text(&out)
        );
        let tree = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let ssl = std::fs::read_to_string(tree.join("Lib/ssl.py")).unwrap();
        assert!(
            ssl.contains("from _ssl import FIPS_mode, FIPS_mode_set"),
            "{version}: Lib/ssl.py is not patched"
        );
        let ssl_c = std::fs::read_to_string(tree.join("Modules/_ssl.c")).unwrap();
        assert!(
            ssl_c.contains("EVP_default_properties_enable_fips"),
            "{version}: Modules/_ssl.c is not patched"
        );
    }
}

#[test]
fn real_sources_are_fetched_verified_and_prepared_through_http() {
    let mirror = setup();
    let server = Server::start();
    let files = [
        "Python-3.13.15.tar.xz",
        "openssl-3.5.7.tar.gz",
        "openssl-src-300.1.3+3.1.2.crate",
    ];
    for file in files {
        server.route(
            &format!("/{file}"),
            Behaviour::Serve(std::fs::read(mirror.join(file)).unwrap()),
        );
    }
    let cache = TempDir::new("e2e-fetch");
    let cache_s = cache.path().to_str().unwrap();
    let url = server.url();
    let mut fetch: Vec<&str> = vec!["fetch"];
    fetch.extend(VERSION);
    fetch.extend(["--mirror", &url, "--cache", cache_s]);

    let out = xtask(&fetch);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.requests().len(), 3, "one request per source");
    for file in files {
        assert!(
            text(&out).contains(file),
            "fetch did not print {file}:\n{}",
            text(&out)
        );
    }

    // A second fetch is a no-op: no request at all.
    let out = xtask(&fetch);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.requests().len(), 3, "a cached fetch made a request");

    let mut prepare: Vec<&str> = vec!["prepare"];
    prepare.extend(VERSION);
    prepare.extend(["--mirror", &url, "--cache", cache_s]);
    let out = xtask(&prepare);
    assert!(out.status.success(), "{}", text(&out));
    let tree = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        tree.starts_with(cache.path()) && tree.ends_with("Python-3.13.15"),
        "{}",
        tree.display()
    );
    assert!(
        std::fs::read_to_string(tree.join("Lib/ssl.py"))
            .unwrap()
            .contains("FIPS_mode_set")
    );

    // A tampered mirror file is refused, and nothing of it is cached.
    let tampered_cache = TempDir::new("e2e-tampered");
    let mut bytes = std::fs::read(mirror.join("openssl-3.5.7.tar.gz")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    server.route("/openssl-3.5.7.tar.gz", Behaviour::Serve(bytes));
    let mut fetch: Vec<&str> = vec!["fetch"];
    fetch.extend(VERSION);
    fetch.extend([
        "--mirror",
        &url,
        "--cache",
        tampered_cache.path().to_str().unwrap(),
    ]);
    let out = xtask(&fetch);
    assert!(!out.status.success(), "a tampered tarball was accepted");
    let msg = text(&out);
    assert!(
        msg.contains("a8c0d28a529ca480f9f36cf5792e2cd21984552a3c8e4aa11a24aa31aeac98e8"),
        "{msg}"
    );
    let sha_dir = tampered_cache
        .path()
        .join("downloads/a8c0d28a529ca480f9f36cf5792e2cd21984552a3c8e4aa11a24aa31aeac98e8");
    assert!(
        !sha_dir.join("openssl-3.5.7.tar.gz").exists(),
        "the tampered file was cached"
    );
}

#[test]
fn the_built_interpreter_enforces_fips_and_passes_cpythons_own_tests() {
    let _g = serial();
    let tarball = PathBuf::from(cold_build()["artifact"].as_str().unwrap());
    let script = std::fs::read(root().join("tests/fips_behaviour.py")).unwrap();
    // CPython's test suite is in the development tree, which unpacks over the runtime one.
    let out = in_fresh_container_with(
        &[&tarball, &dev_tarball_of(&tarball)],
        &[("fips_behaviour.py", &script)],
        &[
            "sh",
            "-c",
            // Sealed, the tree's python overrides an OPENSSL_CONF that would take FIPS away.
            // The behaviour test and CPython's own tests build their configurations through
            // OPENSSL_CONF (non-FIPS ones among them), so they run on the tree unsealed.
            "set -e; P=/opt/python-fips/bin; $P/python-fips-setup; \
             OPENSSL_CONF=/dev/null OPENSSL_MODULES=/nowhere $P/python3 -c \
             'import os, ssl; print(\"sealed:\", ssl.FIPS_mode(), os.environ[\"OPENSSL_CONF\"])'; \
             sed -i '/^# python-fips-seal/d' /opt/python-fips/ssl/openssl.cnf; \
             $P/python3 /tmp/fips_behaviour.py; $P/python3 /tmp/fips_behaviour.py --non-fips; \
             OPENSSL_CONF=/dev/null $P/python3 -m test test_hashlib test_hmac test_ssl",
        ],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("sealed: 1 /opt/python-fips/ssl/openssl.cnf"),
        "{log}"
    );
    assert!(log.contains("fips_behaviour: FIPS mode"), "{log}");
    assert!(log.contains("fips_behaviour: non-FIPS mode"), "{log}");
    assert!(
        log.contains("Result: SUCCESS"),
        "CPython's own tests did not pass:\n{log}"
    );
}

/// The tests of tests/fips_behaviour.py that a stock CPython fails against the same FIPS OpenSSL:
/// what the patch is for.
/// (3.11 adds test_multiprocessing_authkey, which 3.12+ pass without the patch.)
const FAIL_UNPATCHED: [&str; 12] = [
    "test_blake2_refused",
    "test_blake2_refused_after_runtime_fips_mode_set",
    "test_builtin_blake2_module_refuses",
    "test_corrupt_fips_module_fails_closed",
    "test_fips_mode_on",
    "test_fips_mode_set_is_audited",
    "test_fips_mode_set_needs_fips_provider",
    "test_fips_mode_set_switches_default_properties",
    "test_hmac_needs_openssl_digest",
    "test_import_hashlib_fails_loudly_without_hashlib",
    "test_import_is_quiet_without_default_provider",
    "test_pbkdf2_sp800_132_lower_bounds",
];

/// The unpatched control, which is also the suite's patch change: a run killed while its python
/// stage runs, then a run that builds python and finalize only, and a tree that fails exactly the
/// behaviour tests the patch is for. `e2e_verify.rs` takes the same control from the cache.
#[test]
fn a_patch_change_after_a_killed_run_rebuilds_python_and_the_control_fails_where_the_patch_matters()
{
    let _g = serial();
    let cold = cold_build();

    // A cache kept from an earlier run may hold the control: its python and finalize entries go,
    // so that the killed run meets a python stage that runs.
    let plan_dir = work().join("plan-unpatched");
    let (out, plan) = run_python(&plan_dir, &["--no-fips-patch", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan = plan.expect("a dry run writes its plan");
    for name in ["python", "finalize"] {
        let key = stage(&plan, name)["key"].as_str().unwrap();
        let _ = std::fs::remove_dir_all(work().join(format!("cache/stages/{name}-{key}")));
    }

    // Kill the run while the python stage is running.
    let args = python_args(&work().join("dist"), &["--no-fips-patch", "--no-verify"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = command(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let killed_pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut killed = false;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("python ") && line.contains(" running") {
            std::thread::sleep(std::time::Duration::from_secs(20));
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed && !status.success(),
        "the python stage never started, or the run ended first ({status}):\n{seen}"
    );
    // What the killed run leaves: its stage container, and no entry for the stage.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let owner = format!("label=python-fips.owner={}:{killed_pid}", host.trim());
    let containers_left = || {
        let ps = docker(&["ps", "--all", "--filter", &owner, "--format", "{{.Names}}"]);
        assert!(ps.status.success(), "{}", text(&ps));
        String::from_utf8_lossy(&ps.stdout).trim().to_string()
    };
    assert_ne!(
        containers_left(),
        "",
        "the killed run left no container:\n{seen}"
    );
    let python_entry = |report: &serde_json::Value| {
        let key = stage(report, "python")["key"].as_str().unwrap().to_string();
        work().join(format!("cache/stages/python-{key}"))
    };
    assert!(
        !python_entry(&plan).exists(),
        "the killed run made an entry"
    );

    // The image and `verify` of the control are e2e_verify.rs's business.
    let report = build(&["--no-fips-patch", "--no-verify"]);
    assert_eq!(
        stages(&report),
        vec![
            ("openssl".to_string(), true),
            ("fips-provider".to_string(), true),
            ("python".to_string(), false),
            ("finalize".to_string(), false),
        ],
        "a patch change must re-run python and later stages only"
    );
    assert_ne!(report["sha256"], cold["sha256"]);
    assert!(python_entry(&report).is_dir());
    // The next run removed the container the killed run left behind.
    assert_eq!(
        containers_left(),
        "",
        "the killed run's container is still there"
    );

    let tarball = PathBuf::from(report["artifact"].as_str().unwrap());
    assert!(tarball.to_str().unwrap().ends_with("-unpatched.tar.gz"));
    let script = std::fs::read(root().join("tests/fips_behaviour.py")).unwrap();
    let out = in_fresh_container(
        &tarball,
        &[("fips_behaviour.py", &script)],
        &[
            "sh",
            "-c",
            "/opt/python-fips/bin/python-fips-setup >/dev/null && /opt/python-fips/bin/python3 /tmp/fips_behaviour.py",
        ],
    );
    let log = text(&out);
    assert!(
        !out.status.success(),
        "the behaviour test passed on an unpatched build:\n{log}"
    );
    let failed: std::collections::BTreeSet<&str> = log
        .lines()
        .filter(|l| l.ends_with("... FAIL") || l.ends_with("... ERROR"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(failed, FAIL_UNPATCHED.into_iter().collect(), "{log}");
}
