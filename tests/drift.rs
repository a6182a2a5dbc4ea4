//! Drift check: every `Lib/` hunk of every patch applies, with no fuzz, to the standard library
//! of the CPython release its recipe pins, wherever Debian ships that release in binary packages
//! (their `usr/lib/python3.X/` is the release's `Lib/` byte for byte). No source tarball of those
//! releases can be had here, so the C hunks are not checked against them: the README says which.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use xtask::patch::check_subtree;
use xtask::testutil::TempDir;

/// The pinned releases Debian ships, and the version of its packages that carry them.
const DEBIAN: [(&str, &str); 2] = [("3.13.18", "3.13.18-1"), ("3.14.10", "3.14.10-1")];

/// The pinned releases Debian does not ship, and why they go unchecked here.
const NOT_IN_DEBIAN: [(&str, &str); 2] = [
    ("3.11.17", "Debian's 3.11 is 3.11.2"),
    ("3.12.15", "Debian never shipped 3.12"),
];

fn root() -> PathBuf {
    xtask::project_root()
}

/// The CPython release each recipe pins, by minor.
fn pins() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("recipes")).unwrap() {
        let path = entry.unwrap().path();
        let minor = path.file_stem().unwrap().to_str().unwrap().to_string();
        if minor == "sources" {
            continue;
        }
        let recipe: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        out.push((minor, recipe["python"].as_str().unwrap().to_string()));
    }
    out.sort();
    out
}

/// Debian's standard library of CPython `minor` at package `version`, unpacked under `work`.
fn debian_lib(work: &Path, minor: &str, version: &str) -> PathBuf {
    // One apt at a time over the same private lists.
    static APT: Mutex<()> = Mutex::new(());
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    let status = Command::new("bash")
        .arg(root().join("tests/debian-lib.sh"))
        .arg(work)
        .arg(format!("libpython{minor}-minimal={version}"))
        .arg(format!("libpython{minor}-stdlib={version}"))
        .status()
        .unwrap();
    assert!(status.success(), "tests/debian-lib.sh failed for {version}");
    work.join(format!("root/usr/lib/python{minor}"))
}

fn work() -> PathBuf {
    std::env::var_os("PYTHON_FIPS_TEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/e2e"))
        .join("debian-lib")
}

#[test]
fn every_lib_hunk_applies_to_the_pinned_release_where_debian_ships_it() {
    let mut checked = Vec::new();
    for (minor, pinned) in pins() {
        if let Some((_, why)) = NOT_IN_DEBIAN.iter().find(|(v, _)| *v == pinned) {
            eprintln!("CPython {pinned} (recipes/{minor}.toml): not checked, {why}");
            continue;
        }
        let Some((_, version)) = DEBIAN.iter().find(|(v, _)| *v == pinned) else {
            panic!(
                "recipes/{minor}.toml pins CPython {pinned}, which this test does not know: add \
                 the Debian package version that carries it to DEBIAN, or to NOT_IN_DEBIAN why none does"
            );
        };
        let lib = debian_lib(&work(), &minor, version);
        let patch = root().join(format!("patches/{minor}/fips.patch"));
        let files = check_subtree(&patch, Path::new("Lib"), &lib)
            .unwrap_or_else(|e| panic!("CPython {pinned} (Debian {version}): {e:#}"));
        for want in ["Lib/hashlib.py", "Lib/hmac.py", "Lib/ssl.py"] {
            assert!(
                files.contains(&PathBuf::from(want)),
                "patches/{minor}/fips.patch no longer changes {want}: {files:?}"
            );
        }
        eprintln!("CPython {pinned}: every hunk of {files:?} applies at zero fuzz");
        checked.push(pinned);
    }
    assert_eq!(checked, ["3.13.18", "3.14.10"]);
}

#[test]
fn a_hunk_that_no_longer_matches_names_the_file_and_the_hunk() {
    let (minor, version) = ("3.14", "3.14.10-1");
    let lib = debian_lib(&work(), minor, version);
    // A copy of the release's Lib/ files the patch changes, one context line of hmac.py edited.
    let copy = TempDir::new("drift-copy");
    for file in ["hashlib.py", "hmac.py", "ssl.py"] {
        std::fs::copy(lib.join(file), copy.path().join(file)).unwrap();
    }
    let hmac = std::fs::read_to_string(copy.path().join("hmac.py")).unwrap();
    let edited = hmac.replacen("    _hmac = None\n", "    _hmac = None  # edited\n", 1);
    assert_ne!(edited, hmac);
    std::fs::write(copy.path().join("hmac.py"), edited).unwrap();
    let patch = root().join(format!("patches/{minor}/fips.patch"));
    let err = check_subtree(&patch, Path::new("Lib"), copy.path()).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("hmac.py") && err.contains("hunk #1 does not match"),
        "{err}"
    );
}
