//! The uv channel, end to end: the shared cold build's tarball written as a channel by
//! `cargo xtask channel`, served on loopback HTTP, and installed by the real uv (0.13.9, from
//! PyPI's wheel, pinned by sha256 in tests/uv.sh) into two directories. In both the tree runs in
//! FIPS mode on its own OpenSSL, and a uv venv installs a wheel. On Debian trixie, whose own
//! libcrypto.so.3 is OpenSSL 3.5 (newer than the tree's, so the loader accepts it for every symbol
//! the tree's modules ask for), the installed tree maps only its own libcrypto, and a copy without
//! it refuses to import hashlib rather than run on the host's.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

const KEY: &str = "cpython-3.13.15-linux-x86_64-gnu";

fn probe(python: &Path) -> serde_json::Value {
    let out = Command::new(python)
        .args(["-c", TREE_PROBE])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        python.display(),
        text(&out)
    );
    serde_json::from_slice(out.stdout.trim_ascii()).unwrap()
}

#[test]
fn uv_installs_the_channel_and_the_tree_runs_fips_on_its_own_openssl_anywhere() {
    let _g = serial();
    let report = cold_build();
    let tarball = PathBuf::from(report["artifact"].as_str().unwrap());
    let uv_bin = uv_binary();
    let wheel = uv_bin.with_file_name("six-1.16.0-py2.py3-none-any.whl");

    // The channel, served as any web server would.
    let (_server, json_url, json) = served_channel("uv-channel", &[&tarball]);
    assert_eq!(
        json[KEY]["build"], "fips-3.1.2-openssl-src+openssl-3.5.7",
        "{json}"
    );

    let homes = [work().join("uv-a"), work().join("uv-b/a deeper/location")];
    for home in &homes {
        let tree = uv_install(&uv_bin, home, &json_url, KEY);
        let python = tree.join("bin/python3.13");
        assert!(python.is_file(), "uv installed no {}", python.display());
        // The channel leaves the per-machine self-test to the first use, which writes it.
        let cnf = tree.join("ssl/fipsmodule.cnf");
        assert!(!cnf.exists(), "the channel shipped {}", cnf.display());

        let seen = probe(&python);
        assert!(cnf.is_file(), "the first use wrote no {}", cnf.display());
        assert_eq!(seen["fips"], 1, "{seen}");
        assert!(
            seen["md5"].as_str().unwrap().starts_with("refused"),
            "{seen}"
        );
        assert!(
            seen["openssl"]
                .as_str()
                .unwrap()
                .starts_with("OpenSSL 3.5.7 "),
            "{seen}"
        );
        let own = tree.join("lib/libcrypto.so.3");
        assert_eq!(seen["libcrypto"], serde_json::json!([own]), "{seen}");

        // A uv venv on the installed interpreter, and a wheel installed into it by uv.
        let venv = home.join("venv");
        uv(
            &uv_bin,
            home,
            &[
                "venv",
                "--python",
                python.to_str().unwrap(),
                venv.to_str().unwrap(),
            ],
        );
        let venv_python = venv.join("bin/python");
        uv(
            &uv_bin,
            home,
            &[
                "pip",
                "install",
                "--offline",
                "--python",
                venv_python.to_str().unwrap(),
                wheel.to_str().unwrap(),
            ],
        );
        let out = Command::new(&venv_python)
            .args(["-c", &format!("import six\n{TREE_PROBE}")])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the venv's python failed:\n{}",
            text(&out)
        );
        let seen: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
        assert_eq!(seen["fips"], 1, "{seen}");
        assert_eq!(seen["libcrypto"], serde_json::json!([own]), "{seen}");
    }

    // A host with a libcrypto.so.3 new enough for the tree's modules: the loader would take it
    // in place of a missing one of the tree's, and the tree must refuse it.
    let out = xtask(&["base-image", "--suite", "trixie"]);
    assert!(
        out.status.success(),
        "base-image trixie failed:\n{}",
        text(&out)
    );
    let tree = homes[0].join("python").join(KEY);
    let mount = format!("{0}:{0}:ro", tree.display());
    let script = format!(
        "set -eu\n\
         ls /usr/lib/x86_64-linux-gnu/libcrypto.so.3\n\
         {tree}/bin/python3 -c '{probe}'\n\
         cp -a {tree} /tmp/moved\n\
         rm /tmp/moved/lib/libcrypto.so.3 /tmp/moved/lib/libssl.so.3\n\
         if /tmp/moved/bin/python3 -c 'import hashlib' 2>/tmp/err; then\n\
             echo 'import hashlib worked on the host libcrypto'; exit 1\n\
         fi\n\
         cat /tmp/err\n",
        tree = tree.display(),
        probe = TREE_PROBE.replace('\'', "'\\''"),
    );
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        &mount,
        "debian:trixie",
        "sh",
        "-c",
        &script,
    ]);
    let all = text(&out);
    assert!(out.status.success(), "on trixie:\n{all}");
    let seen: serde_json::Value = serde_json::from_str(
        all.lines()
            .find(|l| l.starts_with('{'))
            .expect("no probe output"),
    )
    .unwrap();
    assert_eq!(seen["fips"], 1, "{all}");
    assert_eq!(
        seen["libcrypto"],
        serde_json::json!([tree.join("lib/libcrypto.so.3")]),
        "{all}"
    );
    let refusal = all
        .lines()
        .find(|l| l.starts_with("ImportError"))
        .unwrap_or_else(|| panic!("no ImportError on trixie:\n{all}"));
    assert!(
        refusal.contains("python-fips: this tree's /tmp/moved/lib/libcrypto.so.3 is missing, and /usr/lib/x86_64-linux-gnu/libcrypto.so.3 was loaded in its place"),
        "{all}"
    );
    eprintln!("on trixie, a tree without its libcrypto: {refusal}");
}
