//! `cargo xtask channel`: a uv download channel made from runtime tarballs.
//!
//! For each tarball it writes the install_only layout uv expects (the tree under `python/`) and an
//! entry of `downloads.json`, the file `uv python install --python-downloads-json-url` reads. The
//! directory can be served by any web server. Entries already in `downloads.json` for other
//! versions or architectures are kept, so a channel grows one build at a time.
//!
//! What the archive leaves out: `ssl/fipsmodule.cnf`, which the security policy wants written on
//! each machine (the tree's python runs the self-test on its first use). An absolute symbolic
//! link, which uv refuses to unpack, is an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::image::TreeInfo;
use crate::{flags, tarwalk};

/// The tree's root in a runtime tarball, and in an install_only one.
const TREE: &str = "opt/python-fips/";
const INSTALL_ONLY: &str = "python/";

/// Paths of the tree (below its root) that stay out of a channel archive.
const LEFT_OUT: [&str; 1] = ["ssl/fipsmodule.cnf"];

impl flags::Channel {
    pub fn run(self, _sh: &xshell::Shell) -> Result<()> {
        for w in write(&self.tarballs, &self.out, &self.base_url)? {
            crate::progress::answer!("{}  {}  {}", w.key, w.sha256, w.archive.display());
        }
        crate::progress::answer!(
            "wrote {}; install with `uv python install --python-downloads-json-url {}/downloads.json <key>`",
            self.out.join("downloads.json").display(),
            self.base_url.trim_end_matches('/')
        );
        Ok(())
    }
}

/// What `channel` wrote for one tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The key of its downloads.json entry (`cpython-3.13.15-linux-x86_64-gnu`).
    pub key: String,
    pub archive: PathBuf,
    pub sha256: String,
}

/// Writes the install_only archive and the downloads.json entry of each tarball into `out`.
pub fn write(tarballs: &[PathBuf], out: &Path, base_url: &str) -> Result<Vec<Written>> {
    if !(base_url.starts_with("http://")
        || base_url.starts_with("https://")
        || base_url.starts_with("file://"))
    {
        bail!(
            "--base-url {base_url} is not a URL; give the address the channel directory is \
             served at, such as https://python.example.com/fips/"
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let json_path = out.join("downloads.json");
    let mut entries = read_downloads(&json_path)?;
    // Every tarball is read and named before anything is written.
    let mut planned: Vec<(&PathBuf, TreeInfo, String, String, String)> = Vec::new();
    for tarball in tarballs {
        let info = TreeInfo::read(tarball)?;
        if !info.patched {
            bail!(
                "{} was built with --no-fips-patch: a channel ships FIPS-enforcing trees only",
                tarball.display()
            );
        }
        let arch = info.arch.clone().unwrap_or_else(|| "x86_64".into());
        let key = format!("cpython-{}-linux-{arch}-gnu", info.python);
        if planned.iter().any(|(_, _, _, k, _)| *k == key) {
            bail!("two tarballs give {key}; pass one per version and architecture");
        }
        let name = archive_name(tarball)?;
        planned.push((tarball, info, arch, key, name));
    }
    // Then each archive is written to its .partial name; only when all are whole do they, and
    // then downloads.json, take their names, so the JSON never names an archive it does not match.
    let mut partials: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut written = Vec::new();
    for (tarball, info, arch, key, name) in &planned {
        let archive = out.join(name);
        let partial = archive.with_extension("partial");
        let sha256 = match repack(tarball, &partial) {
            Ok(sha256) => sha256,
            Err(e) => {
                for (p, _) in &partials {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        };
        let url = format!("{}/{name}", base_url.trim_end_matches('/'));
        entries.insert(key.clone(), entry(info, arch, &url, &sha256)?);
        partials.push((partial, archive.clone()));
        written.push(Written {
            key: key.clone(),
            archive,
            sha256,
        });
    }
    for (partial, archive) in &partials {
        std::fs::rename(partial, archive).with_context(|| {
            format!(
                "cannot rename {} to {}",
                partial.display(),
                archive.display()
            )
        })?;
    }
    let mut text = serde_json::to_vec_pretty(&entries)?;
    text.push(b'\n');
    write_atomically(&json_path, &text)?;
    Ok(written)
}

/// `python-fips-…-linux-x86_64.tar.gz` becomes `python-fips-…-linux-x86_64-install_only.tar.gz`.
fn archive_name(tarball: &Path) -> Result<String> {
    let name = tarball
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .filter(|n| n.starts_with("python-fips-"))
        .with_context(|| {
            format!(
                "{} is not a runtime tarball made by `cargo xtask python` (python-fips-….tar.gz)",
                tarball.display()
            )
        })?;
    Ok(format!("{name}-install_only.tar.gz"))
}

/// One entry of uv's downloads JSON.
fn entry(info: &TreeInfo, arch: &str, url: &str, sha256: &str) -> Result<serde_json::Value> {
    let parts: Vec<u64> = info
        .python
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()
        .filter(|p: &Vec<u64>| p.len() == 3)
        .with_context(|| format!("CPython version {} is not X.Y.Z", info.python))?;
    Ok(serde_json::json!({
        "name": "cpython",
        "arch": { "family": arch, "variant": null },
        "os": "linux",
        "libc": "gnu",
        "major": parts[0],
        "minor": parts[1],
        "patch": parts[2],
        "prerelease": "",
        "url": url,
        "sha256": sha256,
        "variant": null,
        // uv shows it; it names what makes this CPython differ from another of the same version:
        // the provider's source (a test source's own version says so) and the libraries.
        "build": format!("fips-{}+openssl-{}", info.provider_source, info.openssl),
    }))
}

/// The entries of an existing downloads.json, or none.
fn read_downloads(path: &Path) -> Result<BTreeMap<String, serde_json::Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a downloads JSON (an object of entries); move it away or fix it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Copies the runtime tarball's tree to `tmp` under `python/`, byte for byte otherwise (same
/// order, modes and times, so the same tarball always gives the same archive). Returns its
/// sha256; on an error `tmp` is removed.
fn repack(tarball: &Path, tmp: &Path) -> Result<String> {
    let file =
        std::fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(HashingWriter::new(file), Compression::default());
    let mut tar = tar::Builder::new(gz);
    let result = tarwalk::for_each_entry(tarball, tarwalk::Compression::Gzip, |path, entry| {
        // The directories above the tree ("opt/") have no place in the archive.
        if TREE.starts_with(&format!("{}/", path.trim_end_matches('/'))) {
            return Ok(None);
        }
        let Some(rel) = path.strip_prefix(TREE) else {
            bail!("{path} is outside {TREE}: not a runtime tarball of `cargo xtask python`");
        };
        if LEFT_OUT.contains(&rel.trim_end_matches('/')) {
            return Ok(None::<()>);
        }
        let mut header = entry.header().clone();
        let kind = header.entry_type();
        let new_path = format!("{INSTALL_ONLY}{rel}");
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()?
                .with_context(|| format!("link {path} has no target"))?
                .to_string_lossy()
                .into_owned();
            let target = if kind.is_hard_link() {
                match target.strip_prefix(TREE) {
                    Some(t) if !LEFT_OUT.contains(&t) => format!("{INSTALL_ONLY}{t}"),
                    Some(t) => bail!("hard link {path} leads to {t}, which a channel leaves out"),
                    None => bail!("hard link {path} leads outside the tree: {target}"),
                }
            } else if target.starts_with('/') {
                bail!(
                    "{path} is a symbolic link to the absolute path {target}, which uv refuses \
                     to unpack; rebuild the tree with this version of python-fips"
                );
            } else if escapes(rel, &target) {
                bail!(
                    "{path} is a symbolic link out of the tree ({target}), which uv refuses to unpack"
                );
            } else {
                target
            };
            header.set_size(0);
            tar.append_link(&mut header, &new_path, &target)?;
        } else {
            tar.append_data(&mut header, &new_path, &mut *entry)?;
        }
        Ok(None)
    });
    let finish = result.and_then(|_| {
        let gz = tar.into_inner()?;
        let hashing = gz.finish()?;
        hashing.file.sync_all()?;
        Ok(hashing.digest())
    });
    finish.map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        e.context(format!(
            "cannot write {} from {}",
            tmp.display(),
            tarball.display()
        ))
    })
}

/// A file writer that hashes what goes through it.
struct HashingWriter {
    file: std::fs::File,
    hash: Sha256,
}

impl HashingWriter {
    fn new(file: std::fs::File) -> Self {
        HashingWriter {
            file,
            hash: Sha256::new(),
        }
    }

    fn digest(self) -> String {
        crate::digest::hex(&self.hash.finalize())
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Whether the relative link target `target` of the entry `rel` (below the tree root) leads
/// above the root.
fn escapes(rel: &str, target: &str) -> bool {
    let mut depth = rel.trim_end_matches('/').split('/').count() as i64 - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => depth -= 1,
            _ => depth += 1,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    const BUILD_INFO: &str = r#"{
        "python": {"version": "3.13.15", "license": "PSF-2.0"},
        "openssl": {"version": "3.5.7", "license": "Apache-2.0"},
        "fips_provider": {"source": {"version": "3.1.2", "license": "Apache-2.0"},
                          "cmvp": "not a validated module"},
        "patches": [{"file": "3.13/fips.patch"}],
        "builder_image": {"base": "debian:bookworm", "id": "sha256:abc"},
        "arch": "ARCH"
    }"#;

    /// A runtime tarball as `python` lays it out, with `extra` (path, link target) symlinks.
    fn tarball(dir: &Path, arch: &str, build_info: &str, links: &[(&str, &str)]) -> PathBuf {
        let path = dir.join(format!(
            "python-fips-3.13.15-openssl-3.5.7-fips-3.1.2-linux-{arch}.tar.gz"
        ));
        let gz = GzBuilder::new().write(std::fs::File::create(&path).unwrap(), Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut dir_entry = |name: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, name, std::io::empty()).unwrap();
        };
        dir_entry("opt/");
        dir_entry("opt/python-fips/");
        let files: [(&str, &[u8], u32); 3] = [
            (
                "opt/python-fips/BUILD-INFO.json",
                build_info.replace("ARCH", arch).leak().as_bytes(),
                0o644,
            ),
            ("opt/python-fips/bin/python3.13", b"\x7fELF python", 0o755),
            (
                "opt/python-fips/ssl/fipsmodule.cnf",
                b"[fips_sect]\n",
                0o644,
            ),
        ];
        for (name, data, mode) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(mode);
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            tar.append_data(&mut h, name, data).unwrap();
        }
        for (name, target) in [("opt/python-fips/bin/python3", "python3.13")]
            .iter()
            .chain(links)
        {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            tar.append_link(&mut h, name, target).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    fn names(archive: &Path) -> Vec<(String, Option<String>, u32)> {
        let mut out = Vec::new();
        tarwalk::for_each_entry(archive, tarwalk::Compression::Gzip, |path, entry| {
            let link = entry.link_name()?.map(|l| l.to_string_lossy().into_owned());
            out.push((path.to_string(), link, entry.header().mode()?));
            Ok(None::<()>)
        })
        .unwrap();
        out
    }

    #[test]
    fn writes_install_only_archives_and_one_entry_per_version_and_arch() {
        let dir = TempDir::new("channel");
        let x86 = tarball(dir.path(), "x86_64", BUILD_INFO, &[]);
        let arm = tarball(dir.path(), "aarch64", BUILD_INFO, &[]);
        let out = dir.path().join("site");
        let written = write(&[x86.clone(), arm], &out, "http://127.0.0.1:8000/fips/").unwrap();
        let keys: Vec<&str> = written.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "cpython-3.13.15-linux-x86_64-gnu",
                "cpython-3.13.15-linux-aarch64-gnu"
            ]
        );

        // The tree under python/, without the per-machine fipsmodule.cnf, modes and links kept.
        let entries = names(&written[0].archive);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "python/BUILD-INFO.json",
                "python/bin/python3.13",
                "python/bin/python3"
            ]
        );
        assert_eq!(entries[1].2, 0o755);
        assert_eq!(entries[2].1.as_deref(), Some("python3.13"));

        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("downloads.json")).unwrap()).unwrap();
        let e = &json["cpython-3.13.15-linux-x86_64-gnu"];
        assert_eq!(e["arch"]["family"], "x86_64");
        assert_eq!(
            (
                e["major"].as_u64(),
                e["minor"].as_u64(),
                e["patch"].as_u64()
            ),
            (Some(3), Some(13), Some(15))
        );
        assert_eq!(e["os"], "linux");
        assert_eq!(e["libc"], "gnu");
        assert_eq!(e["build"], "fips-3.1.2+openssl-3.5.7");
        assert_eq!(
            e["url"],
            "http://127.0.0.1:8000/fips/python-fips-3.13.15-openssl-3.5.7-fips-3.1.2-linux-x86_64-install_only.tar.gz"
        );
        let bytes = std::fs::read(&written[0].archive).unwrap();
        assert_eq!(e["sha256"], crate::digest::hex(&Sha256::digest(&bytes)));

        // The same tarball gives the same bytes, and another run keeps the other entries.
        let again = write(&[x86], &out, "http://127.0.0.1:8000/fips").unwrap();
        assert_eq!(again[0].sha256, written[0].sha256);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("downloads.json")).unwrap()).unwrap();
        assert_eq!(json.as_object().unwrap().len(), 2);
        assert!(
            !out.read_dir()
                .unwrap()
                .any(|e| e.unwrap().path().extension() == Some("partial".as_ref()))
        );
    }

    /// A tree built from a test source says so in its `build`, not only its release.
    #[test]
    fn a_test_source_is_named_in_the_build() {
        let dir = TempDir::new("channel-test-source");
        let info = BUILD_INFO.replace(
            r#""version": "3.1.2", "license""#,
            r#""version": "3.1.2-openssl-src", "carries": {"release": "3.1.2"}, "license""#,
        );
        let t = tarball(dir.path(), "x86_64", &info, &[]);
        let out = dir.path().join("site");
        write(&[t], &out, "https://x.example/").unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("downloads.json")).unwrap()).unwrap();
        assert_eq!(
            json["cpython-3.13.15-linux-x86_64-gnu"]["build"],
            "fips-3.1.2-openssl-src+openssl-3.5.7"
        );
    }

    #[test]
    fn refuses_absolute_links_unpatched_trees_and_bad_input_and_leaves_nothing() {
        let dir = TempDir::new("channel-bad");
        let out = dir.path().join("site");
        let linked = tarball(
            dir.path(),
            "x86_64",
            BUILD_INFO,
            &[(
                "opt/python-fips/ssl/cert.pem",
                "/etc/ssl/certs/ca-certificates.crt",
            )],
        );
        let err = format!(
            "{:#}",
            write(&[linked], &out, "https://x.example/").unwrap_err()
        );
        assert!(
            err.contains("absolute path /etc/ssl/certs/ca-certificates.crt"),
            "{err}"
        );
        assert!(err.contains("uv refuses"), "{err}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing half-written"
        );

        let escaping = dir.path().join("escaping");
        std::fs::create_dir(&escaping).unwrap();
        let t = tarball(
            &escaping,
            "x86_64",
            BUILD_INFO,
            &[("opt/python-fips/lib/passwd", "../../../etc/passwd")],
        );
        let err = format!("{:#}", write(&[t], &out, "https://x.example/").unwrap_err());
        assert!(err.contains("a symbolic link out of the tree"), "{err}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing half-written"
        );
        assert!(!escapes("bin/python3", "python3.13"));
        assert!(!escapes("lib/a/b", "../../bin/x"));
        assert!(escapes("lib/a/b", "../../../x"));

        let unpatched = BUILD_INFO.replace(r#"[{"file": "3.13/fips.patch"}]"#, "[]");
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let t = tarball(&plain, "x86_64", &unpatched, &[]);
        let err = format!(
            "{:#}",
            write(std::slice::from_ref(&t), &out, "https://x.example/").unwrap_err()
        );
        assert!(err.contains("--no-fips-patch"), "{err}");

        let err = format!("{:#}", write(&[t], &out, "x.example/fips").unwrap_err());
        assert!(
            err.contains("--base-url x.example/fips is not a URL"),
            "{err}"
        );

        std::fs::write(out.join("downloads.json"), "[1, 2]").unwrap();
        let ok = tarball(dir.path(), "x86_64", BUILD_INFO, &[]);
        let err = format!(
            "{:#}",
            write(&[ok], &out, "https://x.example/").unwrap_err()
        );
        assert!(err.contains("is not a downloads JSON"), "{err}");
    }
}
