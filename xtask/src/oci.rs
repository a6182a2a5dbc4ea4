//! A local image as OCI blobs: the engine's archive of it (`docker save`, `podman save`) read
//! once, its config checked against the image id and each layer against its diff id, and each
//! layer gzip-compressed the same way every time, so that one image always gives one manifest
//! digest.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::tarwalk::{self, Compression};

pub const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The largest archive member kept in memory (configs, `manifest.json`); larger ones are layers.
const SMALL: u64 = 4 << 20;

/// An image ready to push: its config's bytes and its compressed layers.
pub struct OciImage {
    /// The image config: its sha256 is the image id.
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
    /// The config's `architecture` and `os`.
    pub architecture: String,
    pub os: String,
}

/// A gzip-compressed layer in a file.
pub struct Layer {
    pub path: PathBuf,
    pub digest: String,
    pub size: u64,
}

/// A member of the archive, as far as this module needs it.
enum Member {
    /// Kept whole (up to `SMALL` bytes).
    Small(Vec<u8>),
    /// A large file, compressed as it was read: its uncompressed sha256 and the layer.
    Compressed { diff_id: String, layer: Layer },
    /// A link to another member (docker's archive links a repeated layer).
    Link(String),
}

/// Reads the engine's archive `archive` of the image `image_id` (`sha256:<hex>`), writing its
/// compressed layers into `dir`.
pub fn from_archive(archive: &Path, image_id: &str, dir: &Path) -> Result<OciImage> {
    let what = || format!("the engine's archive of {image_id} ({})", archive.display());
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    tarwalk::for_each_entry(archive, Compression::None, |path, entry| {
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name()?.unwrap_or_default();
            let target = resolve(path, &target.to_string_lossy(), kind.is_symlink());
            members.insert(path.to_string(), Member::Link(target));
        } else if kind.is_file() && entry.size() <= SMALL {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            members.insert(path.to_string(), Member::Small(bytes));
        } else if kind.is_file() {
            let out = dir.join(format!("layer-{}.tar.gz", members.len()));
            let (diff_id, layer) = compress(entry, &out)?;
            members.insert(path.to_string(), Member::Compressed { diff_id, layer });
        }
        Ok(None::<()>)
    })
    .with_context(what)?;
    assemble(members, image_id, dir).with_context(what)
}

/// Puts the image together from its archive's members, as its `manifest.json` names them.
fn assemble(mut members: BTreeMap<String, Member>, image_id: &str, dir: &Path) -> Result<OciImage> {
    let entry = manifest_entry(&members)?;
    let config = match follow(&members, &entry.config) {
        Some(Member::Small(bytes)) => bytes.clone(),
        _ => bail!("its config {} is missing", entry.config),
    };
    let digest = format!("sha256:{}", hex(&Sha256::digest(&config)));
    if digest != image_id {
        bail!(
            "its config hashes to {digest}, not to the image id; an engine whose image ids are \
             not their configs' digests (Docker's containerd image store) is not supported: \
             publish from the classic store or podman"
        );
    }
    let parsed: ImageConfig =
        serde_json::from_slice(&config).context("its config is not an image config")?;
    if parsed.rootfs.diff_ids.len() != entry.layers.len() {
        bail!(
            "its config names {} layers and its manifest.json {}",
            parsed.rootfs.diff_ids.len(),
            entry.layers.len()
        );
    }
    compress_small_layers(&mut members, &entry.layers, dir)?;
    let layers = checked_layers(&members, &entry.layers, &parsed.rootfs.diff_ids)?;
    Ok(OciImage {
        config,
        layers,
        architecture: parsed.architecture,
        os: parsed.os,
    })
}

/// The one image a `manifest.json` lists.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    layers: Vec<String>,
}

/// What is read of an image's config.
#[derive(serde::Deserialize)]
struct ImageConfig {
    architecture: String,
    os: String,
    rootfs: RootFs,
}

/// The uncompressed digests of an image's layers, in order.
#[derive(serde::Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// The archive's `manifest.json`, which must list exactly one image.
fn manifest_entry(members: &BTreeMap<String, Member>) -> Result<ManifestEntry> {
    let manifest: Vec<ManifestEntry> = match members.get("manifest.json") {
        Some(Member::Small(bytes)) => {
            serde_json::from_slice(bytes).context("its manifest.json is not an image list")?
        }
        _ => bail!("it has no manifest.json; is it an image archive?"),
    };
    let len = manifest.len();
    let Ok([entry]) = <[ManifestEntry; 1]>::try_from(manifest) else {
        bail!("its manifest.json lists {len} images, not one");
    };
    Ok(entry)
}

/// Compresses the layers still held in memory (an empty one is 1 KiB), each once.
fn compress_small_layers(
    members: &mut BTreeMap<String, Member>,
    layers: &[String],
    dir: &Path,
) -> Result<()> {
    for (n, name) in layers.iter().enumerate() {
        let Some(name) = final_name(members, name) else {
            continue;
        };
        if let Some(Member::Small(bytes)) = members.get(&name) {
            let out = dir.join(format!("small-{n}.tar.gz"));
            let (diff_id, layer) = compress(&mut &bytes[..], &out)?;
            members.insert(name, Member::Compressed { diff_id, layer });
        }
    }
    Ok(())
}

/// The compressed layers named in `layers`, each checked against the diff id its config names.
fn checked_layers(
    members: &BTreeMap<String, Member>,
    layers: &[String],
    diff_ids: &[String],
) -> Result<Vec<Layer>> {
    let mut out = Vec::new();
    for (name, want) in layers.iter().zip(diff_ids) {
        let Some(Member::Compressed { diff_id, layer }) = follow(members, name) else {
            bail!("its layer {name} is missing");
        };
        if diff_id != want {
            bail!(
                "its layer {name} hashes to {diff_id}, not to the {want} its config names (an \
                 engine that saves compressed layers, as Docker's containerd image store does, \
                 is not supported)"
            );
        }
        out.push(Layer {
            path: layer.path.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
        });
    }
    Ok(out)
}

/// The member `name`, through links.
fn follow<'m>(members: &'m BTreeMap<String, Member>, name: &str) -> Option<&'m Member> {
    members.get(&final_name(members, name)?)
}

/// The name of the member that `name` is, through links (at most a few).
fn final_name(members: &BTreeMap<String, Member>, name: &str) -> Option<String> {
    let mut name = name.to_string();
    for _ in 0..8 {
        match members.get(&name)? {
            Member::Link(target) => name = target.clone(),
            _ => return Some(name),
        }
    }
    None
}

/// The archive path a link at `path` names: a symbolic link's target is relative to the link's
/// directory, a hard link's to the archive's root.
fn resolve(path: &str, target: &str, symbolic: bool) -> String {
    let mut parts: Vec<&str> = match symbolic {
        true => path.split('/').collect(),
        false => vec![""],
    };
    parts.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Compresses `input` into `out` (gzip, default level, no name and no time in the header):
/// the sha256 of what was read, and the layer.
fn compress(input: &mut dyn Read, out: &Path) -> Result<(String, Layer)> {
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut gz = flate2::GzBuilder::new().write(
        Hashing {
            inner: std::io::BufWriter::new(file),
            hasher: Sha256::new(),
            size: 0,
        },
        flate2::Compression::default(),
    );
    let mut raw = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = input.read(&mut buf).context("cannot read the archive")?;
        if n == 0 {
            break;
        }
        raw.update(&buf[..n]);
        gz.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    let mut hashed = gz
        .finish()
        .with_context(|| format!("cannot write {}", out.display()))?;
    hashed.inner.flush()?;
    let layer = Layer {
        path: out.to_path_buf(),
        digest: format!("sha256:{}", hex(&hashed.hasher.finalize())),
        size: hashed.size,
    };
    Ok((format!("sha256:{}", hex(&raw.finalize())), layer))
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W: Write> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// A tar of `files` (path, bytes) and `links` (path, target), in that order.
    fn tar_of(files: &[(&str, &[u8])], links: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *bytes).unwrap();
        }
        for (path, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        format!("sha256:{}", hex(&Sha256::digest(bytes)))
    }

    /// An archive of an image with the layers `a` then `a` again (linked, as docker writes a
    /// repeated layer) then `b`, and its id; `diff_ids` overrides the config's.
    fn archive(dir: &Path, diff_ids: Option<Vec<String>>) -> (PathBuf, String) {
        let (a, b) = (
            tar_of(&[("etc/a", b"a")], &[]),
            tar_of(&[("etc/b", b"b")], &[]),
        );
        let diff_ids = diff_ids.unwrap_or_else(|| vec![sha(&a), sha(&a), sha(&b)]);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "arm64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let id = sha(&config);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": "c.json", "RepoTags": ["x:1"],
            "Layers": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"],
        }]))
        .unwrap();
        let bytes = tar_of(
            &[
                ("l1/layer.tar", &a),
                ("l3/layer.tar", &b),
                ("c.json", &config),
                ("manifest.json", &manifest),
            ],
            &[("l2/layer.tar", "../l1/layer.tar")],
        );
        let path = dir.join("image.tar");
        std::fs::write(&path, bytes).unwrap();
        (path, id)
    }

    #[test]
    fn an_archive_gives_its_config_and_the_same_compressed_layers_every_time() {
        let dir = TempDir::new("oci");
        let (path, id) = archive(dir.path(), None);
        let one = from_archive(&path, &id, dir.path()).unwrap();
        assert_eq!(sha(&one.config), id);
        assert_eq!(
            (one.architecture.as_str(), one.os.as_str()),
            ("arm64", "linux")
        );
        assert_eq!(one.layers.len(), 3);
        assert_eq!(one.layers[0].digest, one.layers[1].digest);
        for layer in &one.layers {
            let bytes = std::fs::read(&layer.path).unwrap();
            assert_eq!(
                (sha(&bytes), bytes.len() as u64),
                (layer.digest.clone(), layer.size)
            );
        }
        let again = TempDir::new("oci-again");
        let two = from_archive(&path, &id, again.path()).unwrap();
        let digests = |i: &OciImage| {
            i.layers
                .iter()
                .map(|l| l.digest.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(digests(&one), digests(&two));
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_or_another_image_is_refused() {
        let dir = TempDir::new("oci-bad");
        let (path, _) = archive(dir.path(), None);
        let e = format!(
            "{:#}",
            from_archive(&path, "sha256:00", dir.path()).err().unwrap()
        );
        assert!(e.contains("not to the image id"), "{e}");
        let wrong = vec![sha(b"x"), sha(b"x"), sha(b"y")];
        let (path, id) = archive(dir.path(), Some(wrong));
        let e = format!("{:#}", from_archive(&path, &id, dir.path()).err().unwrap());
        assert!(e.contains("its layer l1/layer.tar hashes to"), "{e}");
        assert!(e.contains(&id), "{e}");
    }

    /// The compressed bytes depend on the compressor (zlib-rs, pinned by Cargo.lock): a change
    /// of it changes every layer digest, and so every published digest. This makes it seen.
    #[test]
    fn compression_gives_the_bytes_it_always_gave() {
        let dir = TempDir::new("oci-golden");
        let input: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (diff_id, layer) = compress(&mut &input[..], &dir.path().join("l.gz")).unwrap();
        assert_eq!(diff_id, sha(&input));
        assert_eq!(
            (layer.digest.as_str(), layer.size),
            (
                "sha256:584a0860d1cdc94cbe9a871839d9ca25406e1c733697b794097d01131df3ef5d",
                1841
            ),
            "the gzip bytes changed"
        );
    }

    #[test]
    fn links_resolve_against_their_directory_or_the_root() {
        assert_eq!(
            resolve("l2/layer.tar", "../l1/layer.tar", true),
            "l1/layer.tar"
        );
        assert_eq!(
            resolve("l2/layer.tar", "l1/layer.tar", false),
            "l1/layer.tar"
        );
    }
}
