//! End to end: the SBOM, what the tree must not hold, and hash-based bytecode.
//!
//! The reproducibility checks that need a second build live in `e2e_remote.rs`: `rebuild` of the
//! shared cold build's record on a second engine compiles python and finalize from nothing and
//! must give its sha256; the python stage after a patch change there, and the fips-provider stage
//! under podman, compile from the cold build's compiler cache and must give its bytes. A whole
//! second clean build (`--check-reproducible`) does not fit in CI's time: it is run by hand
//! (README).

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::*;

fn tarball_of(report: &serde_json::Value) -> PathBuf {
    PathBuf::from(report["artifact"].as_str().unwrap())
}

#[test]
fn sbom_is_cyclonedx_and_its_hashes_match_the_files() {
    let _g = serial();
    let report = cold_build();
    let sbom_path = PathBuf::from(report["sbom"].as_str().unwrap());
    assert!(
        sbom_path.to_string_lossy().ends_with(
            "dist/python-fips-3.13.15-openssl-3.5.7-fips-3.1.2-openssl-src-linux-x86_64.cdx.json"
        ),
        "{}",
        sbom_path.display()
    );
    let bytes = std::fs::read(&sbom_path).unwrap();
    let tree = files_in(&tarball_of(report), |p| {
        p.ends_with(".cdx.json")
            || p.ends_with("BUILD-INFO.json")
            || p.ends_with("lib/ossl-modules/fips.so")
            || p.ends_with("lib/libcrypto.so.3")
    });
    // The SBOM beside the tarballs is the tree's own, completed with the sha256 of the runtime
    // tarball (which the tree's copy, inside that tarball, cannot hold).
    let in_tree: serde_json::Value =
        serde_json::from_slice(&tree["opt/python-fips/SBOM.cdx.json"]).unwrap();
    let mut beside: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    // It also says where each stage came from in the run that wrote it; the tree's cannot.
    let props = beside["metadata"]["properties"].as_array_mut().unwrap();
    for stage in report["stages"].as_array().unwrap() {
        let name = format!("python-fips:stage:{}", stage["name"].as_str().unwrap());
        let from = props
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no {name} in the SBOM beside the tarball"));
        let from = from["value"].as_str().unwrap();
        assert!(
            ["ran", "local-cache"].contains(&from) || from.starts_with("registry "),
            "{name}: {from}"
        );
    }
    props.retain(|p| {
        !p["name"]
            .as_str()
            .unwrap()
            .starts_with("python-fips:stage:")
    });
    let tarball_component = |bom: &mut serde_json::Value, r: &str| -> serde_json::Value {
        let c = bom["components"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["bom-ref"] == r)
            .unwrap_or_else(|| panic!("no component {r}"));
        let hashes = c["hashes"].clone();
        if r == "tarball:runtime" {
            c.as_object_mut().unwrap().remove("hashes");
        }
        hashes
    };
    let runtime_hash = tarball_component(&mut beside, "tarball:runtime");
    assert_eq!(runtime_hash[0]["content"], report["sha256"]);
    assert_eq!(
        runtime_hash[0]["content"].as_str().unwrap(),
        sha256_hex(&std::fs::read(tarball_of(report)).unwrap())
    );
    let dev_hash = tarball_component(&mut beside, "tarball:dev");
    assert_eq!(dev_hash[0]["content"], report["dev_sha256"]);
    assert_eq!(
        dev_hash[0]["content"].as_str().unwrap(),
        sha256_hex(&std::fs::read(report["dev_artifact"].as_str().unwrap()).unwrap())
    );
    assert_eq!(
        in_tree, beside,
        "the SBOM in the tree and the one beside the tarball differ beyond the runtime tarball's hash"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&tree["opt/python-fips/BUILD-INFO.json"]).unwrap();
    assert_eq!(info["reproducible"], true);
    assert_eq!(info["sbom"], "SBOM.cdx.json");

    let bom: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(bom["version"], 1);
    let serial_number = bom["serialNumber"].as_str().unwrap();
    let uuid = serial_number.strip_prefix("urn:uuid:").unwrap();
    let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(groups, vec![8, 4, 4, 4, 12], "{serial_number}");
    assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert!(
        bom["metadata"]["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(bom["metadata"]["component"]["name"], "python-fips");

    let components = bom["components"].as_array().unwrap();
    let by_ref = |r: &str| -> &serde_json::Value {
        components
            .iter()
            .find(|c| c["bom-ref"] == r)
            .unwrap_or_else(|| panic!("no component {r} in {bom:#}"))
    };
    for c in components {
        for field in ["type", "name", "version", "hashes", "licenses"] {
            assert!(!c[field].is_null(), "{} has no {field}", c["bom-ref"]);
        }
        assert_eq!(c["hashes"][0]["alg"], "SHA-256");
    }
    let hash = |c: &serde_json::Value| c["hashes"][0]["content"].as_str().unwrap().to_string();

    // Sources: the hashes of the upstream files (the test mirror holds the same bytes).
    let mirror = setup();
    for (r, file, version, license) in [
        ("cpython", "Python-3.13.15.tar.xz", "3.13.15", "PSF-2.0"),
        ("openssl", "openssl-3.5.7.tar.gz", "3.5.7", "Apache-2.0"),
        (
            "fips-provider",
            "openssl-src-300.1.3+3.1.2.crate",
            "3.1.2",
            "Apache-2.0",
        ),
    ] {
        let c = by_ref(r);
        assert_eq!(c["version"], version);
        assert_eq!(c["licenses"][0]["license"]["id"], license);
        assert_eq!(
            hash(c),
            sha256_hex(&std::fs::read(mirror.join(file)).unwrap()),
            "{r}"
        );
    }
    // The 3.1.2 provider's certificate, and the archive its tree came from: the SBOM says both.
    let provider = by_ref("fips-provider");
    let description = provider["description"].as_str().unwrap();
    assert!(
        description.contains("CMVP certificate #4985 (FIPS 140-3), active")
            && description
                .contains("the Rust crate openssl-src 300.1.3+3.1.2 (not the release tarball)"),
        "{provider:#}"
    );
    let shipped = |c: &serde_json::Value, path: &str| -> String {
        let f = c["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == path)
            .unwrap_or_else(|| panic!("{path} is not listed under {}", c["bom-ref"]));
        hash(f)
    };
    assert_eq!(
        shipped(provider, "lib/ossl-modules/fips.so"),
        sha256_hex(&tree["opt/python-fips/lib/ossl-modules/fips.so"])
    );
    assert_eq!(
        shipped(by_ref("openssl"), "lib/libcrypto.so.3"),
        sha256_hex(&tree["opt/python-fips/lib/libcrypto.so.3"])
    );
    // The patch, by the hash of its bytes.
    let patch = by_ref("patch:3.13/fips.patch");
    assert_eq!(
        hash(patch),
        sha256_hex(&std::fs::read(root().join("patches/3.13/fips.patch")).unwrap())
    );
    // The builder image the stages ran in (their keys name it), with its installed packages.
    let builder = by_ref("builder");
    let python = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "python")
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work().join(format!(
            "cache/stages/python-{}/meta.json",
            python["key"].as_str().unwrap()
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        format!("sha256:{}", hash(builder)),
        meta["inputs"]["builder-image"].as_str().unwrap()
    );
    let packages: Vec<&str> = builder["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for want in ["build-essential", "libc6", "perl", "zlib1g-dev"] {
        assert!(packages.contains(&want), "{want} is not in {packages:?}");
    }
}

#[test]
fn pyc_files_are_hash_based_and_checked() {
    let _g = serial();
    let report = cold_build();
    let mut pycs = files_in(&tarball_of(report), |p| p.ends_with(".pyc"));
    assert!(pycs.len() > 1000, "only {} .pyc files", pycs.len());
    // The development tarball's too: the test suite's and the -O / -OO levels.
    let tarball = tarball_of(report);
    pycs.extend(files_in(&dev_tarball_of(&tarball), |p| p.ends_with(".pyc")));
    // PEP 552: the second word of the header is the flags; 0b11 is a checked hash-based pyc.
    let wrong: Vec<(&String, u32)> = pycs
        .iter()
        .map(|(p, b)| (p, u32::from_le_bytes(b[4..8].try_into().unwrap())))
        .filter(|(_, flags)| *flags != 0b11)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} .pyc files are not checked-hash based, e.g. {:?}",
        wrong.len(),
        pycs.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// The Unix times at which the stages of a build ran, from their cached logs' names.
fn stage_run_times(report: &serde_json::Value) -> Vec<u64> {
    let mut times = Vec::new();
    for s in report["stages"].as_array().unwrap() {
        let entry = work().join(format!(
            "cache/stages/{}-{}/meta.json",
            s["name"].as_str().unwrap(),
            s["key"].as_str().unwrap()
        ));
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
        let log = meta["log"].as_str().unwrap();
        let started: u64 = log
            .trim_end_matches(".log")
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let seconds = meta["seconds"].as_f64().unwrap() as u64;
        times.extend([started, started + seconds]);
    }
    times
}

/// The newest modification time of any entry in the gzip tarball at `path`.
fn newest_time_in(path: &std::path::Path) -> u64 {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let newest = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().mtime().unwrap())
        .max()
        .unwrap();
    assert!(newest > 0, "{} holds no times", path.display());
    newest
}

/// `text` as an extended regular expression that matches only itself.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.[]()*+?{}|^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `date` on this machine, UTC.
fn date(at: u64, format: &str) -> String {
    let out = Command::new("date")
        .args(["--utc", &format!("--date=@{at}"), &format!("+{format}")])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn tree_holds_no_host_path_hostname_user_kernel_or_build_date() {
    let _g = serial();
    let report = cold_build();
    let tarball = tarball_of(report);
    let info = files_in(&tarball, |p| p.ends_with("BUILD-INFO.json"));
    let info: serde_json::Value = serde_json::from_slice(info.values().next().unwrap()).unwrap();
    let epoch = info["source_date_epoch"].as_u64().unwrap();
    // OpenSSL has an epoch of its own (so one OpenSSL build serves every CPython that pins it):
    // the newest time in its upstream tarball, read here from the download itself.
    let openssl_epoch = newest_time_in(
        &work()
            .join("cache/downloads")
            .join(info["openssl"]["sha256"].as_str().unwrap())
            .join(info["openssl"]["file"].as_str().unwrap()),
    );
    let unpacked = work().join(format!("leaks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked).unwrap();
    for t in [tarball.clone(), dev_tarball_of(&tarball)] {
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&t)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap();
        assert!(status.success());
    }

    // Needles are extended regular expressions; the literal ones go through `literal`.
    let mut needles: Vec<String> = vec![
        literal(&root().to_string_lossy()),
        literal(&work().to_string_lossy()),
    ];
    // Short names ("vm", "ci") are substrings of too many words to search for.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    if hostname.trim().len() >= 6 {
        needles.push(literal(hostname.trim()));
    }
    // The kernel is the host's inside a container too: a build that records `uname -r` leaks it.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    needles.push(literal(kernel.trim()));
    if let Ok(user) = std::env::var("USER")
        && user != "root"
        && user.len() >= 4
    {
        needles.push(literal(&format!("/home/{user}")));
    }
    // The days the stages really ran, as __DATE__, ISO 8601 and date(1) write them (unless it
    // is a SOURCE_DATE_EPOCH's day, which is meant to be there).
    for t in stage_run_times(report) {
        if [epoch, openssl_epoch]
            .iter()
            .any(|&e| date(t, "%F") == date(e, "%F"))
        {
            continue;
        }
        needles.push(literal(&date(t, "%b %e %Y")));
        needles.push(literal(&date(t, "%F")));
        // date(1) and asctime write the year after the time ("Tue Dec  8 01:47:00 UTC 2026").
        // The weekday and day alone are not a needle: upstream changelogs hold such dates from
        // other years.
        needles.push(format!(
            "{} [0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}} ([A-Z]+ )?{}",
            literal(&date(t, "%a %b %e")),
            date(t, "%Y")
        ));
    }
    needles.sort();
    needles.dedup();
    let mut grep = Command::new("grep");
    grep.args([
        "--recursive",
        "--binary-files=text",
        "--only-matching",
        "--extended-regexp",
    ]);
    for n in &needles {
        grep.arg("-e").arg(n);
    }
    let out = grep.arg(&unpacked).output().unwrap();
    let hits = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::remove_dir_all(&unpacked).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the tree holds what it must not (searched for {needles:?}):\n{}",
        hits.lines().take(30).collect::<Vec<_>>().join("\n")
    );

    // Where a build date must be recorded, it is SOURCE_DATE_EPOCH's.
    let run = in_fresh_container(
        &tarball,
        &[],
        &[
            "sh",
            "-c",
            "/opt/python-fips/bin/python3 -c 'import sys; print(sys.version)' && /opt/python-fips/bin/openssl version -b",
        ],
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", text(&run));
    let python_date = date(epoch, "%b %e %Y, %H:%M:%S");
    let openssl_date = date(openssl_epoch, "%a %b %e %H:%M:%S %Y UTC");
    assert!(
        said.contains(&python_date),
        "sys.version does not carry {python_date}: {said}"
    );
    assert!(
        said.contains(&openssl_date),
        "openssl version -b does not say {openssl_date}: {said}"
    );
}
