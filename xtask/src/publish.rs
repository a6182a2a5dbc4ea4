//! `publish`: one build's runtime images for several architectures, pushed to an OCI registry
//! under one multi-arch tag, each with its evidence attached.
//!
//! For each architecture in turn, the build runs as `image` runs it (every stage, the package,
//! the runtime image and `verify`, all from the cache when they are there), and an image whose
//! checks fail is not published. The image is read from the engine's archive of it and pushed
//! as an OCI image manifest by digest (`oci.rs`), then its attachments are pushed as OCI 1.1
//! referrers (`subject` and `artifactType`): the tree's CycloneDX SBOM, the verify verdict, an
//! in-toto statement with a SLSA provenance predicate, and an in-toto statement of the FIPS
//! provider's CMVP standing. Only when every architecture's manifest is in the registry is the
//! index put under the tags: a failure on the way leaves every tag where it was.
//!
//! Every document is made from the build's record (BUILD-INFO.json, SOURCE_DATE_EPOCH), never
//! from the clock, so the same build gives the same digests, and a second publish finds every
//! blob and manifest there and sends none. An image keeps the attachments of its first
//! publish: one of each kind.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use crate::arch::{self, Arch};
use crate::build::Build;
use crate::build_info::BuildInfo;
use crate::config::BuildConfig;
use crate::digest::hex;
use crate::engine::Engine;
use crate::flags::{self, Runtime};
use crate::oci::{self, OciImage};
use crate::pipeline::Done;
use crate::progress::{Reporter, Terminal};
use crate::python::build_and_prove;
use crate::registry::{
    Descriptor, INDEX_TYPE, MANIFEST_TYPE, ManifestPut, Platform, Registry, TITLE,
};
use crate::ship::Artifact;
use crate::sign::{self, Signer};
use crate::verify::Verdict;

/// The empty JSON object, the config of every attachment (OCI 1.1's empty descriptor).
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const SBOM_TYPE: &str = "application/vnd.cyclonedx+json";
const VERDICT_TYPE: &str = "application/vnd.python-fips.verify.v1+json";
const IN_TOTO_TYPE: &str = "application/vnd.in-toto+json";
/// The annotation that tells in-toto statements apart, as other tools attach them.
const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// The predicate of the FIPS attestation: this project's own.
pub const FIPS_PREDICATE: &str = "urn:python-fips:fips-attestation:v1";
/// SLSA's `buildType` and `builder.id` of a build by this tool.
const BUILD_TYPE: &str = "urn:python-fips:build:v1";
const BUILDER_ID: &str = "urn:python-fips:xtask";

const CREATED: &str = "org.opencontainers.image.created";
/// Marks an attachment as this tool's, naming which document it is.
const ATTACHMENT: &str = "org.python-fips.attachment";

impl flags::Publish {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let registry = Registry::open_for("--registry", &self.registry)?;
        let archs = self.targets(sh)?;
        let signer = self.sign_key.as_deref().map(Signer::load).transpose()?;
        for tag in &self.tag {
            check_tag(tag)?;
        }
        let ui = Terminal::new();
        // Before any build: a registry that cannot be reached or will not take a push says so
        // now, not after the builds.
        let mut counts = Counts::default();
        let (_, uploaded) = registry
            .put_blob_bytes(b"{}", EMPTY_TYPE)
            .with_context(|| {
                format!(
                    "cannot push to {}; nothing was built or published",
                    self.registry
                )
            })?;
        counts.blobs += usize::from(uploaded);
        let facts = Facts {
            revision: revision(sh, &ui),
            source: self.source.clone(),
        };
        let mut platforms = Vec::new();
        for target in archs {
            let published = self
                .one_arch(sh, target, &registry, &facts, &mut counts, &ui)
                .with_context(|| {
                    format!(
                        "cannot publish the {} image to {}; no tag was moved",
                        target.name, self.registry
                    )
                })?;
            platforms.push(published);
        }
        let tags = match self.tag.is_empty() {
            true => default_tags(&platforms[0].info.python.version, self.build.runtime),
            false => self.tag.clone(),
        };
        // Signed before it is tagged: a tag never names an unsigned index when a key was given.
        let (index, body) = put_index(&registry, &platforms, &mut counts)?;
        let signed = match &signer {
            Some(signer) => sign_all(&registry, signer, &platforms, &index, &mut counts)?,
            None => Vec::new(),
        };
        move_tags(&registry, &tags, &body, &mut counts, &ui)?;
        for tag in &tags {
            crate::progress::answer!("{}:{tag}@{}", registry.reference(), index.digest);
        }
        if let Some(path) = &self.build.report {
            let report = Report {
                registry: registry.reference(),
                tags: &tags,
                index: &index,
                platforms: &platforms,
                signed: &signed,
                uploaded: &counts,
            };
            crate::cache::write_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
        }
        Ok(())
    }

    /// The architectures to publish, once the flags are known to make images fit for shipping:
    /// `--arch`'s, or the engine's own.
    fn targets(&self, sh: &Shell) -> Result<Vec<&'static Arch>> {
        if self.build.no_verify {
            bail!("publish pushes verified images only; drop --no-verify");
        }
        if self.build.sources.no_fips_patch {
            bail!(
                "publish pushes patched trees only; --no-fips-patch builds the negative control, \
                 which is never for shipping"
            );
        }
        let archs = match self.build.arch.as_deref() {
            Some(list) => arch::parse_list(list)?,
            None => {
                let engine = Engine::detect(sh, self.build.engine.as_deref())?;
                vec![arch::parse(&engine.arch(sh)?)?]
            }
        };
        Ok(archs)
    }

    /// Builds (or finds) the image of `target`, proves it, and pushes it with its attachments.
    fn one_arch(
        &self,
        sh: &Shell,
        target: &'static Arch,
        registry: &Registry,
        facts: &Facts,
        counts: &mut Counts,
        ui: &dyn Reporter,
    ) -> Result<PlatformImage> {
        let mut args = self.build.clone();
        args.arch = Some(target.name.to_string());
        args.report = None;
        // The build holds the cache lock, and with it the scratch the image is read into.
        let build = Build::start(sh, &BuildConfig::from_args(&args)?, ui)?;
        let ready = Ready::of(&build, target, ui)?;
        let mut annotations = annotations(&ready.info, facts, args.runtime);
        annotations.insert(
            crate::image::LABEL_TARBALL.into(),
            ready.artifact.sha256.clone(),
        );
        let manifest = push_image(registry, &ready.oci, &annotations, counts)?;
        let subject = Subject {
            registry: registry.reference(),
            digest: &manifest.digest,
            size: manifest.size,
            created: &annotations[CREATED],
        };
        let documents = ready.documents(&subject, args.runtime, facts)?;
        let attachments = attach(registry, &subject, &documents, counts, ui)?;
        ui.message(&format!(
            "publish: {} {}@{}",
            target.platform,
            registry.reference(),
            manifest.digest
        ));
        Ok(PlatformImage {
            arch: target.name,
            platform: Platform {
                architecture: target.deb.to_string(),
                os: "linux".to_string(),
            },
            image_id: ready.image_id,
            tarball_sha256: ready.artifact.sha256.clone(),
            manifest,
            attachments,
            annotations,
            info: ready.info,
        })
    }
}

/// One architecture's verified image, read from the engine, with what its attachments say.
struct Ready {
    image_id: String,
    oci: OciImage,
    verdict: Verdict,
    artifact: Artifact,
    stages: Vec<Done>,
    info: BuildInfo,
    tree: TreeFiles,
}

impl Ready {
    /// Runs `build` to its verified runtime image (from the cache when it is there) and reads
    /// the image from the engine into the build's scratch.
    fn of(build: &Build, target: &Arch, ui: &dyn Reporter) -> Result<Ready> {
        let outcome = build_and_prove(build, ui)?;
        let (image, verdict, json) = outcome.proof.context("no runtime image was made")?;
        verdict.ensure_passed(Some(&json))?;
        let info = read_build_info(&outcome.artifact.build_info)?;
        let tree = TreeFiles::read(&outcome.artifact.tarball, &info)?;
        let scratch = build.cache().scratch("publish")?;
        let archive = scratch.join("image.tar");
        ui.message(&format!("publish: reading {} ({})", image.id, target.name));
        build.engine().save(build.shell(), &image.id, &archive)?;
        let oci = oci::from_archive(&archive, &image.id, &scratch)?;
        let _ = std::fs::remove_file(&archive);
        if oci.architecture != target.deb || oci.os != "linux" {
            bail!(
                "the runtime image {} is for {}/{}, not {}",
                image.id,
                oci.os,
                oci.architecture,
                target.platform
            );
        }
        Ok(Ready {
            image_id: image.id,
            oci,
            verdict,
            artifact: outcome.artifact,
            stages: outcome.done.into_vec(),
            info,
            tree,
        })
    }

    /// The four attachments of the image `subject`.
    fn documents(
        &self,
        subject: &Subject,
        runtime: Runtime,
        facts: &Facts,
    ) -> Result<[Attachment; 4]> {
        let provenance = provenance(subject, &self.info, &self.stages, &self.artifact, runtime);
        Ok([
            Attachment::file(SBOM_TYPE, "sbom.cdx.json", self.tree.sbom.clone()),
            Attachment::file(
                VERDICT_TYPE,
                "verify.json",
                verdict_document(subject, &self.verdict)?,
            ),
            Attachment::statement(
                SLSA_PROVENANCE,
                "provenance.intoto.json",
                with_revision(provenance, facts),
            )?,
            Attachment::statement(
                FIPS_PREDICATE,
                "fips.intoto.json",
                fips_attestation(subject, &self.info, &self.tree, &self.verdict),
            )?,
        ])
    }
}

/// What the annotations say beyond the build's record.
struct Facts {
    /// The checkout's commit (`-dirty` when the files a build reads have changes).
    revision: Option<String>,
    /// `--source`: where the project's source is.
    source: Option<String>,
}

/// How many blobs and manifests this run sent (none when everything was there).
#[derive(Default, Serialize)]
struct Counts {
    blobs: usize,
    manifests: usize,
}

/// One architecture's published image.
#[derive(Serialize)]
struct PlatformImage {
    arch: &'static str,
    platform: Platform,
    image_id: String,
    tarball_sha256: String,
    manifest: Pushed,
    attachments: Vec<Pushed>,
    /// Its manifest's annotations.
    #[serde(skip)]
    annotations: BTreeMap<String, String>,
    #[serde(skip)]
    info: BuildInfo,
}

/// A manifest in the registry: its digest, size and type, and whether this run put it.
#[derive(Serialize, Clone)]
struct Pushed {
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    put: bool,
}

/// What `--report` gets.
#[derive(Serialize)]
struct Report<'a> {
    registry: &'a str,
    tags: &'a [String],
    index: &'a Pushed,
    platforms: &'a [PlatformImage],
    /// The manifests and the index signed with `--sign-key`.
    signed: &'a [String],
    uploaded: &'a Counts,
}

/// The image an attachment refers to.
struct Subject<'a> {
    registry: &'a str,
    digest: &'a str,
    size: u64,
    /// The build's time, which every document carries as its own.
    created: &'a str,
}

impl Subject<'_> {
    fn descriptor(&self) -> Descriptor {
        Descriptor::new(MANIFEST_TYPE, self.digest, self.size)
    }

    /// The in-toto subject: the image manifest by its digest.
    fn in_toto(&self) -> serde_json::Value {
        json!([{
            "name": self.registry,
            "digest": {"sha256": self.digest.trim_start_matches("sha256:")},
        }])
    }
}

/// `3.13.15` and `3.13`, with `-distroless` for that runtime.
fn default_tags(python: &str, runtime: Runtime) -> Vec<String> {
    let suffix = match runtime {
        Runtime::Base => "",
        Runtime::Distroless => "-distroless",
    };
    let minor = crate::catalog::minor_of(python);
    vec![format!("{python}{suffix}"), format!("{minor}{suffix}")]
}

/// The checkout's commit, `-dirty` when what a build reads has uncommitted changes; `None` (with
/// a warning) outside a git checkout.
fn revision(sh: &Shell, ui: &dyn Reporter) -> Option<String> {
    let head = cmd!(sh, "git rev-parse HEAD")
        .quiet()
        .ignore_stderr()
        .read();
    let Ok(head) = head else {
        ui.message("warning: not in a git checkout: the images get no revision annotation");
        return None;
    };
    let changed = cmd!(sh, "git status --porcelain -- xtask patches recipes")
        .quiet()
        .read()
        .unwrap_or_default();
    Some(match changed.trim().is_empty() {
        true => head,
        false => format!("{head}-dirty"),
    })
}

/// The OCI annotations of an image's manifest and of the index.
fn annotations(info: &BuildInfo, facts: &Facts, runtime: Runtime) -> BTreeMap<String, String> {
    let provider = info.fips_provider.source.release();
    let runtime = match runtime {
        Runtime::Base => "base",
        Runtime::Distroless => "distroless",
    };
    let mut licenses: Vec<&str> = Vec::new();
    for source in [&info.python, &info.openssl, &info.fips_provider.source] {
        if !licenses.contains(&source.license.as_str()) {
            licenses.push(&source.license);
        }
    }
    let mut a: BTreeMap<String, String> = [
        ("org.opencontainers.image.title", "python-fips".to_string()),
        (
            "org.opencontainers.image.description",
            format!(
                "CPython {} whose cryptography goes only through the OpenSSL {provider} FIPS \
                 provider ({runtime} runtime)",
                info.python.version
            ),
        ),
        (
            "org.opencontainers.image.version",
            info.python.version.clone(),
        ),
        (CREATED, crate::date::rfc3339(info.source_date_epoch)),
        ("org.opencontainers.image.licenses", licenses.join(" AND ")),
        (crate::image::LABEL_OPENSSL, info.openssl.version.clone()),
        (crate::image::LABEL_PROVIDER, provider.to_string()),
        (crate::image::LABEL_RUNTIME, runtime.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(certificate) = info.fips_provider.cmvp.certificate() {
        a.insert(
            "org.python-fips.cmvp.certificate".into(),
            certificate.into(),
        );
    }
    if let Some(revision) = &facts.revision {
        a.insert("org.opencontainers.image.revision".into(), revision.clone());
    }
    if let Some(source) = &facts.source {
        a.insert("org.opencontainers.image.source".into(), source.clone());
    }
    a
}

/// The dist copy of BUILD-INFO.json (the tree's, with each stage's origin).
fn read_build_info(path: &Path) -> Result<BuildInfo> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    BuildInfo::parse(&text).with_context(|| format!("cannot read {}", path.display()))
}

/// What the attachments take from the tree itself.
struct TreeFiles {
    sbom: Vec<u8>,
    /// The sha256 of `lib/ossl-modules/fips.so`.
    fips_so: String,
}

impl TreeFiles {
    fn read(tarball: &Path, info: &BuildInfo) -> Result<TreeFiles> {
        let sbom_path = format!("opt/python-fips/{}", info.sbom);
        let module = "opt/python-fips/lib/ossl-modules/fips.so";
        let (mut sbom, mut fips_so) = (None, None);
        crate::tarwalk::for_each_entry(tarball, crate::tarwalk::Compression::Gzip, |path, e| {
            if path == sbom_path {
                let mut bytes = Vec::new();
                e.take(64 << 20).read_to_end(&mut bytes)?;
                sbom = Some(bytes);
            } else if path == module {
                let mut hasher = Sha256::new();
                std::io::copy(e, &mut hasher)?;
                fips_so = Some(hex(&hasher.finalize()));
            }
            // Both found: the walk stops.
            Ok((sbom.is_some() && fips_so.is_some()).then_some(()))
        })?;
        match (sbom, fips_so) {
            (Some(sbom), Some(fips_so)) => Ok(TreeFiles { sbom, fips_so }),
            _ => bail!(
                "{} lacks {sbom_path} or {module}; is it a tarball made by `cargo xtask python`?",
                tarball.display()
            ),
        }
    }
}

/// Pushes the config and layers of `oci`, then its manifest by digest.
fn push_image(
    registry: &Registry,
    oci: &OciImage,
    annotations: &BTreeMap<String, String>,
    counts: &mut Counts,
) -> Result<Pushed> {
    let mut blob = |r: Result<(Descriptor, bool)>| -> Result<Descriptor> {
        let (d, uploaded) = r?;
        counts.blobs += usize::from(uploaded);
        Ok(d)
    };
    let config = blob(registry.put_blob_bytes(&oci.config, oci::CONFIG_TYPE))?;
    let mut layers = Vec::new();
    for layer in &oci.layers {
        let d = blob(registry.put_blob_file(&layer.path, oci::LAYER_TYPE))?;
        if d.digest != layer.digest {
            bail!("{} changed while it was uploaded", layer.path.display());
        }
        layers.push(d);
    }
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config,
        "layers": layers,
        "annotations": annotations,
    }))?;
    Ok(put_by_digest(registry, MANIFEST_TYPE, &body, None, counts)?.0)
}

/// Puts a manifest at its own digest.
fn put_by_digest(
    registry: &Registry,
    media_type: &str,
    body: &[u8],
    artifact_type: Option<&str>,
    counts: &mut Counts,
) -> Result<(Pushed, ManifestPut)> {
    let digest = format!("sha256:{}", hex(&Sha256::digest(body)));
    let put = registry.put_manifest(&digest, media_type, body)?;
    counts.manifests += usize::from(put.put);
    let pushed = Pushed {
        digest: put.digest.clone(),
        size: body.len() as u64,
        artifact_type: artifact_type.map(str::to_string),
        put: put.put,
    };
    Ok((pushed, put))
}

/// A document attached to an image.
struct Attachment {
    artifact_type: &'static str,
    /// The in-toto predicate of a statement.
    predicate: Option<&'static str>,
    title: &'static str,
    bytes: Vec<u8>,
}

impl Attachment {
    fn file(artifact_type: &'static str, title: &'static str, bytes: Vec<u8>) -> Attachment {
        Attachment {
            artifact_type,
            predicate: None,
            title,
            bytes,
        }
    }

    fn statement(
        predicate: &'static str,
        title: &'static str,
        statement: serde_json::Value,
    ) -> Result<Attachment> {
        Ok(Attachment {
            artifact_type: IN_TOTO_TYPE,
            predicate: Some(predicate),
            title,
            bytes: serde_json::to_vec_pretty(&statement)?,
        })
    }

    fn annotations(&self, created: &str) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            (CREATED.to_string(), created.to_string()),
            (ATTACHMENT.to_string(), self.title.to_string()),
        ]);
        if let Some(p) = self.predicate {
            a.insert(PREDICATE_TYPE.to_string(), p.to_string());
        }
        a
    }
}

/// Whether a referrers index's entry is this tool's attachment `title` (another tool's of the
/// same type does not stand in for it).
fn is_ours(entry: &serde_json::Value, title: &str) -> bool {
    entry["annotations"][ATTACHMENT] == title
}

/// An image index's `manifests`, each as it is (fields this tool does not know kept); refused
/// unless it is an image index.
fn index_manifests(bytes: &[u8], what: &str) -> Result<Vec<serde_json::Value>> {
    let index: serde_json::Value =
        serde_json::from_slice(bytes).with_context(|| format!("{what} is not JSON"))?;
    let is_index = index["mediaType"] == INDEX_TYPE && index["schemaVersion"] == 2;
    match index["manifests"].as_array() {
        Some(manifests) if is_index => Ok(manifests.clone()),
        _ => bail!(
            "{what} is not an OCI image index, so it is left alone; remove it or name another repository"
        ),
    }
}

/// The tag of the referrers index of `digest` where the registry lacks the referrers API (the
/// OCI distribution specification's fallback): `sha256-<hex>`.
fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Pushes the attachments the image lacks (one of each kind), each as an artifact manifest
/// whose `subject` is the image; where the registry has no referrers API, also the fallback
/// tag's index listing them.
fn attach(
    registry: &Registry,
    subject: &Subject,
    documents: &[Attachment],
    counts: &mut Counts,
    ui: &dyn Reporter,
) -> Result<Vec<Pushed>> {
    let api = registry.referrers(subject.digest)?;
    let tag = fallback_tag(subject.digest);
    let mut listed = match &api {
        Some(bytes) => index_manifests(bytes, "the referrers API's answer")?,
        None => match registry.get_manifest(&tag)? {
            Some((_, bytes)) => index_manifests(&bytes, &format!("the tag {tag}"))?,
            None => Vec::new(),
        },
    };
    let (empty, uploaded) = registry.put_blob_bytes(b"{}", EMPTY_TYPE)?;
    counts.blobs += usize::from(uploaded);
    let mut pushed = Vec::new();
    let mut unindexed = false;
    for doc in documents {
        if let Some(there) = listed.iter().find(|d| is_ours(d, doc.title)) {
            pushed.push(Pushed {
                digest: there["digest"].as_str().unwrap_or_default().to_string(),
                size: there["size"].as_u64().unwrap_or_default(),
                artifact_type: there["artifactType"].as_str().map(str::to_string),
                put: false,
            });
            continue;
        }
        let (mut layer, uploaded) = registry.put_blob_bytes(&doc.bytes, doc.artifact_type)?;
        counts.blobs += usize::from(uploaded);
        layer.annotations.insert(TITLE.into(), doc.title.into());
        let annotations = doc.annotations(subject.created);
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": doc.artifact_type,
            "config": empty,
            "layers": [layer],
            "subject": subject.descriptor(),
            "annotations": annotations,
        }))?;
        let (one, put) = put_by_digest(
            registry,
            MANIFEST_TYPE,
            &body,
            Some(doc.artifact_type),
            counts,
        )?;
        // A registry that indexed the subject itself lists it through its referrers API.
        unindexed |= !put.subject_indexed;
        let mut d = Descriptor::new(MANIFEST_TYPE, &one.digest, one.size);
        d.artifact_type = Some(doc.artifact_type.to_string());
        d.annotations = annotations;
        listed.push(serde_json::to_value(d)?);
        ui.message(&format!(
            "publish: attached {} to {}",
            doc.title, subject.digest
        ));
        pushed.push(one);
    }
    if api.is_none() && unindexed {
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": listed,
        }))?;
        let put = registry.put_manifest(&tag, INDEX_TYPE, &index)?;
        counts.manifests += usize::from(put.put);
    }
    Ok(pushed)
}

/// Puts the index of `platforms` by its digest, once each of their manifests is in the
/// registry: its descriptor and its bytes, for the tags.
fn put_index(
    registry: &Registry,
    platforms: &[PlatformImage],
    counts: &mut Counts,
) -> Result<(Pushed, Vec<u8>)> {
    let mut manifests = Vec::new();
    for p in platforms {
        if registry.get_manifest(&p.manifest.digest)?.is_none() {
            bail!(
                "the {} manifest {} is not in {}; the index was not put, so no tag was moved",
                p.arch,
                p.manifest.digest,
                registry.reference()
            );
        }
        let mut d = Descriptor::new(MANIFEST_TYPE, &p.manifest.digest, p.manifest.size);
        d.platform = Some(p.platform.clone());
        manifests.push(d);
    }
    // The index says what every platform shares (the tarball differs per platform).
    let mut annotations = platforms[0].annotations.clone();
    for p in &platforms[1..] {
        annotations.retain(|k, v| p.annotations.get(k) == Some(v));
    }
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": manifests,
        "annotations": annotations,
    }))?;
    let (pushed, _) = put_by_digest(registry, INDEX_TYPE, &body, None, counts)?;
    Ok((pushed, body))
}

/// Puts the index `body` under each of `tags` in turn; a failure says which tags moved.
fn move_tags(
    registry: &Registry,
    tags: &[String],
    body: &[u8],
    counts: &mut Counts,
    ui: &dyn Reporter,
) -> Result<()> {
    for (n, tag) in tags.iter().enumerate() {
        let put = registry
            .put_manifest(tag, INDEX_TYPE, body)
            .with_context(|| match &tags[..n] {
                [] => "no tag was moved".to_string(),
                moved => format!("only {} now names the new index", moved.join(", ")),
            })?;
        counts.manifests += usize::from(put.put);
        ui.message(&format!(
            "publish: {}:{tag} -> {}",
            registry.reference(),
            put.digest
        ));
    }
    Ok(())
}

/// Refuses a tag the distribution specification does not allow, before anything is built.
fn check_tag(tag: &str) -> Result<()> {
    let valid = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let first = tag.chars().next();
    if tag.len() > 128
        || !first.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        || !tag.chars().all(valid)
    {
        bail!(
            "--tag {tag:?} is not a tag: up to 128 letters, digits, `_`, `.` and `-`, not \
             starting with `.` or `-` (e.g. 3.13-fips)"
        );
    }
    Ok(())
}

/// Signs each platform's manifest and then the index; returns the digests signed.
fn sign_all(
    registry: &Registry,
    signer: &Signer,
    platforms: &[PlatformImage],
    index: &Pushed,
    counts: &mut Counts,
) -> Result<Vec<String>> {
    let mut signed = Vec::new();
    let digests = (platforms.iter().map(|p| &p.manifest.digest)).chain([&index.digest]);
    for digest in digests {
        put_signature(registry, signer, digest, counts)
            .with_context(|| format!("cannot sign {digest}; no tag was moved"))?;
        signed.push(digest.clone());
    }
    Ok(signed)
}

/// Signs `digest` (cosign's form, `sign.rs`) and adds the signature to those under its `.sig`
/// tag, unless it is there.
fn put_signature(
    registry: &Registry,
    signer: &Signer,
    digest: &str,
    counts: &mut Counts,
) -> Result<()> {
    let (payload, signature) = signer.sign(registry.reference(), digest)?;
    let (mut layer, uploaded) = registry.put_blob_bytes(&payload, sign::PAYLOAD_TYPE)?;
    counts.blobs += usize::from(uploaded);
    layer
        .annotations
        .insert(sign::SIGNATURE_ANNOTATION.into(), signature);
    let tag = sign::signature_tag(digest);
    #[derive(serde::Deserialize)]
    struct Signatures {
        layers: Vec<Descriptor>,
    }
    let mut layers = match registry.get_manifest(&tag)? {
        Some((_, bytes)) => {
            let there: Signatures = serde_json::from_slice(&bytes)
                .with_context(|| format!("the tag {tag} is not a signature manifest"))?;
            there.layers
        }
        None => Vec::new(),
    };
    if layers.contains(&layer) {
        return Ok(());
    }
    layers.push(layer);
    let payloads: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    let (config, uploaded) = registry.put_blob_bytes(&sign::config(&payloads), oci::CONFIG_TYPE)?;
    counts.blobs += usize::from(uploaded);
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": config,
        "layers": layers,
    }))?;
    let put = registry.put_manifest(&tag, MANIFEST_TYPE, &body)?;
    counts.manifests += usize::from(put.put);
    Ok(())
}

/// The verify verdict as attached: the image by its published digest, without what only this
/// machine knows (its tags, whether the verdict came from the cache).
fn verdict_document(subject: &Subject, verdict: &Verdict) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(&json!({
        "image": format!("{}@{}", subject.registry, subject.digest),
        "image_id": verdict.image_id,
        "tarball_sha256": verdict.tarball_sha256,
        "passed": verdict.passed,
        "checks": verdict.checks,
    }))?)
}

/// An in-toto statement about the image.
fn statement(
    subject: &Subject,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> serde_json::Value {
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject.in_toto(),
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

/// The SLSA provenance (v1) of the image: what was asked, every source and patch by sha256, the
/// builder image, each stage's key and where its output came from in the publishing run.
fn provenance(
    subject: &Subject,
    info: &BuildInfo,
    stages: &[Done],
    artifact: &Artifact,
    runtime: Runtime,
) -> serde_json::Value {
    let source = |role: &str, s: &crate::build_info::Source| {
        let mut d = json!({
            "name": s.file,
            "digest": {"sha256": s.sha256},
            "annotations": {"role": role, "version": s.version, "license": s.license},
        });
        if let Some(carried) = &s.carries {
            d["annotations"]["carries"] = json!(carried);
        }
        d
    };
    let mut dependencies = vec![
        source("python", &info.python),
        source("openssl", &info.openssl),
        source("fips-provider", &info.fips_provider.source),
    ];
    for patch in &info.patches {
        dependencies.push(json!({
            "name": format!("patches/{}", patch.file),
            "digest": {"sha256": patch.sha256},
        }));
    }
    dependencies.push(json!({
        "name": "builder-image",
        "digest": {"sha256": info.builder_image.id.trim_start_matches("sha256:")},
        "annotations": {"base": info.builder_image.base},
    }));
    let byproducts: Vec<serde_json::Value> = stages
        .iter()
        .map(|s| {
            json!({
                "name": format!("stage:{}", s.name),
                "digest": {"sha256": s.key},
                "annotations": {"origin": s.origin.as_ref().map(|o| o.describe())},
            })
        })
        .chain([json!({
            "name": artifact.tarball.file_name().map(|n| n.to_string_lossy().into_owned()),
            "digest": {"sha256": artifact.sha256},
        })])
        .collect();
    let runtime = match runtime {
        Runtime::Base => "base",
        Runtime::Distroless => "distroless",
    };
    let predicate = json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "recipe": format!("recipes/{}.toml", crate::catalog::minor_of(&info.python.version)),
                "python": info.python.version,
                "openssl": info.openssl.version,
                "fips_provider": info.fips_provider.source.version,
                "arch": info.arch,
                "runtime": runtime,
            },
            "internalParameters": {
                "build_arch": info.build_arch,
                "source_date_epoch": info.source_date_epoch,
                "configure": info.configure,
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID},
            "metadata": {"startedOn": subject.created},
            "byproducts": byproducts,
        },
    });
    statement(subject, SLSA_PROVENANCE, predicate)
}

/// The provenance statement with the builder's version: the checkout's revision, when known.
fn with_revision(mut statement: serde_json::Value, facts: &Facts) -> serde_json::Value {
    if let Some(revision) = &facts.revision {
        statement["predicate"]["runDetails"]["builder"]["version"] = json!({"revision": revision});
    }
    statement
}

/// The FIPS attestation: the provider module by its hash and release, its CMVP certificate
/// with the standard and its status on the build's day (with the day it moves to the Historical
/// list), and the verify verdict's outcome.
fn fips_attestation(
    subject: &Subject,
    info: &BuildInfo,
    tree: &TreeFiles,
    verdict: &Verdict,
) -> serde_json::Value {
    let provider = &info.fips_provider;
    let predicate = json!({
        "module": {
            "name": "OpenSSL FIPS Provider",
            "version": provider.source.release(),
            "file": "lib/ossl-modules/fips.so",
            "sha256": tree.fips_so,
            "source": provider.source,
        },
        "cmvp": provider.cmvp,
        "libraries": {"openssl": info.openssl.version},
        "python": info.python.version,
        "verify": {
            "passed": verdict.passed,
            "checks": verdict.checks.len(),
            "failed": verdict.failed(),
        },
    });
    statement(subject, FIPS_PREDICATE, predicate)
}

#[cfg(test)]
mod tests;
