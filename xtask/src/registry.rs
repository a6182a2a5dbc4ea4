//! `--cache-registry`: the stage cache shared through an OCI registry.
//!
//! An entry is an OCI artifact: a manifest tagged `<stage>-<key>` whose layers are the entry's
//! files (`output.tar` and `meta.json` for a stage, `image.tar` for a builder image), each named
//! by its title annotation. This module speaks the registry's HTTP API (the OCI distribution
//! specification) itself, from the machine that drives the build, rather than through the
//! engine: the registry then needs to be reachable from here only, a remote engine needs neither
//! a route to it nor credentials for it, and docker and podman behave the same.
//!
//! Credentials are the user's existing logins (`docker login`, `podman login`), read from the
//! files and credential helpers those commands write; nothing here takes a secret on the command
//! line. Plain HTTP is used for loopback registries only. The login and tokens go to the
//! registry's own origin only (scheme, host and port), never to an upload location or token
//! service elsewhere, and a place it names must be HTTPS unless the registry is on loopback.
//!
//! What the registry sends is bounded: manifests, token answers and blobs by size (a blob by
//! its manifest's), blob reads by the downloads' minimum speed, and a pulled entry must be
//! exactly the files its caller names. Its words reach messages with control characters
//! escaped.
//!
//! The registry accelerates and is never needed: the first failure to reach it, or to be let in,
//! turns it off for the rest of the run, and the caller says so in one line. A refused or failed
//! push turns off only pushing: a login that may pull but not push still pulls.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::blocking::{Client, Request, RequestBuilder, Response};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::digest::hex;
use crate::download::{CopyError, Pace, RetryPolicy, copy_hashing};
use crate::progress::SilentTransfer;
use crate::store::Remote;

pub(crate) const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// What a manifest request accepts: an image manifest or an index, OCI's or Docker's (a tag
/// another tool put must be seen, not taken for absent and overwritten).
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";
const CONFIG_TYPE: &str = "application/vnd.python-fips.entry.v1+json";
const FILE_TYPE: &str = "application/vnd.python-fips.file.v1";
pub(crate) const TITLE: &str = "org.opencontainers.image.title";

/// A repository in an OCI registry that holds stage entries.
pub struct Registry {
    /// `host[:port]/path`, as the user gave it.
    reference: String,
    /// `https://host[:port]` (`http://` for a loopback host).
    base: String,
    host: String,
    repository: String,
    client: Client,
    limits: Limits,
    /// The user's login for the host, looked up the first time the registry asks for one.
    login: OnceLock<Option<Login>>,
    /// How requests authenticate, once the registry has asked.
    auth: Mutex<Auth>,
    /// The registry is off for the rest of this run: it failed (and the caller said so).
    off: AtomicBool,
    /// Pushing is off for the rest of this run: a push was refused.
    pushing_off: AtomicBool,
}

/// How requests authenticate.
enum Auth {
    /// Not at all (until the registry answers 401).
    Anonymous,
    /// With the user's login, as the registry's `Basic` challenge asked.
    Basic,
    /// With a token from the registry's token service, for `scope`.
    Bearer { token: String, scope: String },
}

/// What an operation does to the registry: reads go on after a push was refused.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// How long the registry may take to answer.
#[derive(Clone, Copy)]
struct Limits {
    /// A manifest, a question or a token: the whole exchange.
    call: Duration,
    /// The slowest blob read tolerated: the downloads' rule.
    pace: Pace,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            call: Duration::from_secs(60),
            pace: RetryPolicy::default().pace(),
        }
    }
}

/// The largest manifest read: ours are a few hundred bytes.
const MANIFEST_CAP: u64 = 4 << 20;
/// The largest token service answer read: tokens are a few kilobytes.
const TOKEN_CAP: u64 = 1 << 20;
/// How much of an error answer is read for its first line.
const ERROR_CAP: u64 = 64 << 10;
/// The largest entry pulled: a builder image is about a gigabyte, a stage's output less.
const ENTRY_CAP: u64 = 16 << 30;
/// How long an upload may take. Entries are up to a few hundred megabytes and builder images
/// about a gigabyte, on a local network; pulls keep `Limits::pace` instead.
const BLOB_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The parts of an OCI image manifest this module writes and reads.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: String,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// An OCI content descriptor: what a manifest or an index says of a blob or a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// The platform of an image in an index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The type of an artifact (an attachment, in a referrers index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size,
            platform: None,
            artifact_type: None,
            annotations: Default::default(),
        }
    }
}

/// An image's platform, as an index names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub architecture: String,
    pub os: String,
}

/// The shared stage caches of a command's `--cache-registry`: that registry, or none.
pub fn shared_caches(reference: Option<&str>) -> Result<Vec<Box<dyn crate::store::Remote + Sync>>> {
    match reference {
        Some(reference) => Ok(vec![Box::new(Registry::open(reference)?)]),
        None => Ok(vec![]),
    }
}

impl Registry {
    /// The registry repository `reference` (`registry.example.com/team/python-fips-cache`), with
    /// the user's credentials for its host. Nothing is sent yet.
    pub fn open(reference: &str) -> Result<Registry> {
        Registry::open_with(reference, Limits::default())
    }

    /// Like `open`, for the repository the flag `flag` names (its errors say that flag).
    pub fn open_for(flag: &str, reference: &str) -> Result<Registry> {
        Registry::open_flagged(flag, reference, Limits::default())
    }

    fn open_with(reference: &str, limits: Limits) -> Result<Registry> {
        Registry::open_flagged("--cache-registry", reference, limits)
    }

    fn open_flagged(flag: &str, reference: &str, limits: Limits) -> Result<Registry> {
        let (host, repository) = parse_reference(flag, reference)?;
        let scheme = match is_loopback(&host) {
            true => "http",
            false => "https",
        };
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A blob read waits at most this long for each piece; other calls set their own.
            .timeout(limits.pace.over)
            .build()
            .context("cannot make an HTTP client")?;
        Ok(Registry {
            reference: reference.to_string(),
            base: format!("{scheme}://{host}"),
            host,
            repository,
            client,
            limits,
            login: OnceLock::new(),
            auth: Mutex::new(Auth::Anonymous),
            off: AtomicBool::new(false),
            pushing_off: AtomicBool::new(false),
        })
    }

    /// The user's login for the host, if there is one (looked up once, when first needed).
    fn login(&self) -> Option<&Login> {
        self.login.get_or_init(|| login_for(&self.host)).as_ref()
    }

    /// Runs `op` unless the registry (or, for a write, pushing) is off. An `Unusable` failure
    /// turns the registry off for the run, or only pushing when a write was refused.
    fn guarded<T>(&self, access: Access, quiet: T, op: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.off.load(Ordering::Relaxed)
            || (access == Access::Write && self.pushing_off.load(Ordering::Relaxed))
        {
            return Ok(quiet);
        }
        op().map_err(|e| {
            let Some(unusable) = e.downcast_ref::<Unusable>() else {
                return e;
            };
            match access == Access::Write && !unusable.unreachable {
                true => {
                    self.pushing_off.store(true, Ordering::Relaxed);
                    e.context("not pushed to again in this run")
                }
                false => {
                    self.off.store(true, Ordering::Relaxed);
                    e.context("not asked again in this run")
                }
            }
        })
    }

    /// The URL `url` (absolute, or relative to the registry) that the registry named for
    /// `what` (an upload, its token service): HTTPS, or plain HTTP for a loopback registry only.
    fn target(&self, url: &str, what: &str) -> Result<reqwest::Url> {
        let shown = printable(url);
        let parsed = reqwest::Url::parse(&self.base)
            .and_then(|base| base.join(url))
            .map_err(|e| Unusable::refused(format!("{what} {shown} is not a URL: {e}")))?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" if is_loopback(&self.host) => Ok(parsed),
            _ => Err(Unusable::refused(format!(
                "{what} {shown} is not HTTPS, so it is refused (plain HTTP is for a loopback \
                 registry only)"
            ))
            .into()),
        }
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port), the only place
    /// the login or a token is sent.
    fn is_home(&self, url: &reqwest::Url) -> bool {
        reqwest::Url::parse(&self.base).is_ok_and(|base| base.origin() == url.origin())
    }

    /// `req` as it is sent: with the login or token only when it goes to the registry itself.
    fn authorised(&self, req: RequestBuilder) -> Result<Request> {
        let req = req.build().context("cannot make an HTTP request")?;
        if !self.is_home(req.url()) {
            return Ok(req);
        }
        let req = RequestBuilder::from_parts(self.client.clone(), req);
        let req = match &*self.auth.lock().unwrap() {
            Auth::Bearer { token, .. } => req.bearer_auth(token),
            Auth::Basic => match self.login() {
                Some((user, password)) => req.basic_auth(user, Some(password)),
                None => req,
            },
            Auth::Anonymous => req,
        };
        req.build().context("cannot make an HTTP request")
    }

    /// A request that is not a blob transfer: the whole exchange takes at most `limits.call`.
    fn call(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.client.request(method, url).timeout(self.limits.call)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// Sends the request `make` builds, answering the registry's authentication challenge once:
    /// `Basic` with the user's login, `Bearer` with a token for the challenge's scope (or, when
    /// it names none, pulling, and pushing too for a write).
    fn send(
        &self,
        what: &str,
        access: Access,
        make: &dyn Fn() -> Result<RequestBuilder>,
    ) -> Result<Response> {
        let unreachable =
            |e: reqwest::Error| Unusable::unreachable(format!("{what}: {}", one_line(&e)));
        let resp = (self.client)
            .execute(self.authorised(make()?)?)
            .map_err(unreachable)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let auth = match challenge.split_once(' ') {
            Some((scheme, params)) if scheme.eq_ignore_ascii_case("bearer") => {
                let params = parse_challenge(params);
                let scope = params.get("scope").cloned().unwrap_or_else(|| {
                    let actions = match access {
                        Access::Read => "pull",
                        Access::Write => "pull,push",
                    };
                    format!("repository:{}:{actions}", self.repository)
                });
                let already = matches!(&*self.auth.lock().unwrap(),
                    Auth::Bearer { scope: s, .. } if *s == scope);
                if already {
                    return Err(self.unauthorised(what).into());
                }
                Auth::Bearer {
                    token: self.fetch_token(&params, &scope)?,
                    scope,
                }
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("basic") && self.login().is_some() => {
                if matches!(*self.auth.lock().unwrap(), Auth::Basic) {
                    return Err(self.unauthorised(what).into());
                }
                Auth::Basic
            }
            _ => return Err(self.unauthorised(what).into()),
        };
        *self.auth.lock().unwrap() = auth;
        let resp = (self.client)
            .execute(self.authorised(make()?)?)
            .map_err(unreachable)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorised(what).into());
        }
        Ok(resp)
    }

    fn unauthorised(&self, what: &str) -> Unusable {
        let advice = match self.login() {
            Some(_) => "the login for it was refused; log in again with",
            None => "no login for it was found; log in with",
        };
        let login = crate::engine::login_hint(&self.host);
        Unusable::refused(format!("{what}: unauthorised ({advice} `{login}`)"))
    }

    /// A bearer token from the registry's token service for `scope`.
    fn fetch_token(
        &self,
        challenge: &std::collections::BTreeMap<String, String>,
        scope: &str,
    ) -> Result<String> {
        let realm = challenge.get("realm").ok_or_else(|| {
            Unusable::refused("its authentication challenge names no realm".into())
        })?;
        let mut query = vec![("scope", scope)];
        if let Some(service) = challenge.get("service") {
            query.push(("service", service));
        }
        let url = self.target(realm, "its token service")?;
        let realm = printable(realm);
        let mut req = self.call(Method::GET, url.clone()).query(&query);
        // A token service elsewhere gets no login: it could be anyone the registry named.
        if let Some((user, password)) = self.login().filter(|_| self.is_home(&url)) {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req.send().map_err(|e| {
            Unusable::unreachable(format!("token service {realm}: {}", one_line(&e)))
        })?;
        if !resp.status().is_success() {
            return Err(self
                .unauthorised(&format!("token service {realm} ({scope})"))
                .into());
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_capped(resp, TOKEN_CAP, &format!("token service {realm}"))?;
        let token: Token = serde_json::from_slice(&body)
            .map_err(|e| Unusable::refused(format!("token service {realm}: {e}")))?;
        token
            .token
            .or(token.access_token)
            .ok_or_else(|| Unusable::refused(format!("token service {realm} gave no token")).into())
    }

    /// The manifest tagged `tag` and its digest, or `None` if there is no such tag.
    fn manifest(&self, tag: &str) -> Result<Option<(String, Manifest)>> {
        let Some((digest, bytes)) = self.get_manifest(tag)? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("the manifest of {tag} is not an OCI image manifest"))?;
        Ok(Some((digest, manifest)))
    }

    /// Whether the tag `tag` exists.
    fn has_manifest(&self, tag: &str) -> Result<bool> {
        let url = self.url(&format!("manifests/{tag}"));
        let resp = self.send(&format!("HEAD manifest {tag}"), Access::Read, &|| {
            Ok(self
                .call(Method::HEAD, &url)
                .header("Accept", ACCEPT_MANIFESTS))
        })?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(false),
            _ => checked(resp, &format!("HEAD manifest {tag}")).map(|_| true),
        }
    }

    /// Writes the blob `d` to `to`, refusing bytes that do not hash to its digest.
    fn pull_blob(&self, d: &Descriptor, to: &Path) -> Result<()> {
        let url = self.url(&format!("blobs/{}", d.digest));
        let what = format!("GET blob {}", d.digest);
        let get = || Ok(self.client.get(&url));
        let resp = checked(self.send(&what, Access::Read, &get)?, &what)?;
        let says = |sent: String| {
            Unusable::refused(format!(
                "{what}: the registry {sent}; its manifest says {}",
                d.size
            ))
        };
        if let Some(len) = resp.content_length().filter(|len| *len != d.size) {
            return Err(says(format!("announces {len} bytes")).into());
        }
        let mut file =
            std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
        let mut hasher = Sha256::new();
        let pace = self.limits.pace;
        let copied = copy_hashing(
            &mut resp.take(d.size + 1),
            &mut file,
            &mut hasher,
            0,
            d.size,
            Some(pace),
            &SilentTransfer,
        );
        let size = match copied {
            Ok(size) if size == d.size => size,
            Ok(size) => return Err(says(format!("sent {size} bytes")).into()),
            Err(CopyError::TooLong(_)) => {
                return Err(says(format!("sent more than {} bytes", d.size)).into());
            }
            Err(CopyError::TooSlow { at, speed }) => bail!(Unusable::unreachable(format!(
                "{what}: too slow: {speed} bytes/s for {}s (the minimum is {} bytes/s); left \
                 after {at} bytes",
                pace.over.as_secs_f64(),
                pace.min_speed
            ))),
            Err(CopyError::Read(at, e)) => bail!(Unusable::unreachable(format!(
                "{what}: the connection broke after {at} bytes: {e}"
            ))),
            Err(CopyError::Write(e)) => bail!("cannot write {}: {e}", to.display()),
        };
        let got = format!("sha256:{}", hex(&hasher.finalize()));
        if got != d.digest {
            bail!(
                "the bytes of {} do not match the manifest (they hash to {got}, {size} bytes; \
                 it says {}, {} bytes); refused",
                printable(d.annotations.get(TITLE).map_or(d.digest.as_str(), |t| t)),
                printable(&d.digest),
                d.size
            );
        }
        file.sync_all()
            .with_context(|| format!("cannot sync {}", to.display()))
    }

    /// Uploads `bytes` (or the file `path`) as a blob unless the registry has it; returns its
    /// descriptor and whether it was uploaded.
    fn push_blob(&self, source: BlobSource, media_type: &str) -> Result<(Descriptor, bool)> {
        let (digest, size) = match &source {
            BlobSource::Bytes(b) => (
                format!("sha256:{}", hex(&Sha256::digest(b))),
                b.len() as u64,
            ),
            BlobSource::File(p) => {
                let size = std::fs::metadata(p)
                    .with_context(|| format!("cannot read {}", p.display()))?
                    .len();
                (format!("sha256:{}", crate::digest::sha256_file(p)?), size)
            }
        };
        let descriptor = Descriptor::new(media_type, &digest, size);
        let url = self.url(&format!("blobs/{digest}"));
        let what = format!("HEAD blob {digest}");
        if self
            .send(&what, Access::Read, &|| Ok(self.call(Method::HEAD, &url)))?
            .status()
            == StatusCode::OK
        {
            return Ok((descriptor, false));
        }
        let what = "POST blob upload";
        let uploads = self.url("blobs/uploads/");
        let post = || Ok(self.call(Method::POST, &uploads));
        let resp = checked(self.send(what, Access::Write, &post)?, what)?;
        let location = header(&resp, "Location")
            .context("the registry started an upload without saying where it goes")?;
        let mut put = self.target(&location, "its upload location")?;
        put.query_pairs_mut().append_pair("digest", &digest);
        let what = format!("PUT blob {digest}");
        let resp = self.send(&what, Access::Write, &|| {
            let body = match &source {
                BlobSource::Bytes(b) => reqwest::blocking::Body::from(b.clone()),
                BlobSource::File(p) => {
                    let file = std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?;
                    reqwest::blocking::Body::sized(file, size)
                }
            };
            Ok(self
                .client
                .put(put.clone())
                .timeout(BLOB_TIMEOUT)
                .header("Content-Type", "application/octet-stream")
                .body(body))
        })?;
        checked(resp, &what)?;
        Ok((descriptor, true))
    }

    /// PUTs the manifest `body` (of `media_type`) at `reference`, a tag or a digest.
    fn send_manifest(&self, reference: &str, media_type: &str, body: &[u8]) -> Result<Response> {
        let url = self.url(&format!("manifests/{reference}"));
        let what = format!("PUT manifest {reference}");
        let resp = self.send(&what, Access::Write, &|| {
            Ok(self
                .call(Method::PUT, &url)
                .header("Content-Type", media_type)
                .body(body.to_vec()))
        })?;
        checked(resp, &what)
    }
}

/// What publishing asks of a repository: blobs, manifests and indexes by digest or tag. Unlike
/// the stage cache's calls, these are never turned off: a failure is the caller's error.
impl Registry {
    /// `host[:port]/repository`, as the user gave it.
    pub(crate) fn reference(&self) -> &str {
        &self.reference
    }

    /// Uploads the file `path` as a blob of `media_type` unless the registry has it: its
    /// descriptor, and whether it was uploaded.
    pub(crate) fn put_blob_file(
        &self,
        path: &Path,
        media_type: &str,
    ) -> Result<(Descriptor, bool)> {
        self.push_blob(BlobSource::File(path.to_path_buf()), media_type)
    }

    /// Like `put_blob_file`, for bytes in memory.
    pub(crate) fn put_blob_bytes(
        &self,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(Descriptor, bool)> {
        self.push_blob(BlobSource::Bytes(bytes.to_vec()), media_type)
    }

    /// The manifest or index at `reference` (a tag or a digest) with its digest, or `None` when
    /// there is none. Its bytes must hash to the digest the registry gives, and to a digest
    /// reference.
    pub(crate) fn get_manifest(&self, reference: &str) -> Result<Option<(String, Vec<u8>)>> {
        let url = self.url(&format!("manifests/{reference}"));
        let what = format!("GET manifest {reference}");
        let resp = self.send(&what, Access::Read, &|| {
            Ok(self
                .call(Method::GET, &url)
                .header("Accept", ACCEPT_MANIFESTS))
        })?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = checked(resp, &what)?;
        let said = header(&resp, "Docker-Content-Digest");
        let bytes = read_capped(resp, MANIFEST_CAP, &what)?;
        let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
        let asked = Some(reference.to_string()).filter(|r| r.starts_with("sha256:"));
        if let Some(said) = said.filter(|s| s.starts_with("sha256:")).or(asked)
            && said != digest
        {
            let said = printable(&said);
            bail!(
                "the manifest of {reference} hashes to {digest}, not the {said} the registry gave"
            );
        }
        Ok(Some((digest, bytes)))
    }

    /// Puts `body` (of `media_type`) at `reference` (a tag, or its own digest) unless it is
    /// there already, byte for byte.
    pub(crate) fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<ManifestPut> {
        let digest = format!("sha256:{}", hex(&Sha256::digest(body)));
        let there = match reference.starts_with("sha256:") {
            true => self.has_manifest(reference)?,
            false => self
                .get_manifest(reference)?
                .is_some_and(|(d, _)| d == digest),
        };
        if there {
            return Ok(ManifestPut {
                digest,
                put: false,
                subject_indexed: false,
            });
        }
        let resp = self.send_manifest(reference, media_type, body)?;
        Ok(ManifestPut {
            digest,
            put: true,
            subject_indexed: header(&resp, "OCI-Subject").is_some(),
        })
    }

    /// The referrers API's index of the manifest `digest`, or `None` when the registry has no
    /// referrers API (it answers 404, or 400 or 405 as some do; one that has it answers an
    /// index, empty or not). Only the first page is read: publish attaches a few documents.
    pub(crate) fn referrers(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let url = self.url(&format!("referrers/{digest}"));
        let what = format!("GET referrers {digest}");
        let resp = self.send(&what, Access::Read, &|| {
            Ok(self.call(Method::GET, &url).header("Accept", INDEX_TYPE))
        })?;
        let absent = [
            StatusCode::NOT_FOUND,
            StatusCode::BAD_REQUEST,
            StatusCode::METHOD_NOT_ALLOWED,
        ];
        if absent.contains(&resp.status()) {
            return Ok(None);
        }
        let resp = checked(resp, &what)?;
        let index = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(INDEX_TYPE));
        let bytes = read_capped(resp, MANIFEST_CAP, &what)?;
        // A registry without the API may answer an unknown path with a page: not an index.
        Ok(Some(bytes).filter(|_| index))
    }
}

/// What `put_manifest` did.
pub(crate) struct ManifestPut {
    pub digest: String,
    /// It was sent (not there already).
    pub put: bool,
    /// The registry said it indexed the manifest's subject for the referrers API.
    pub subject_indexed: bool,
}

/// What a blob is made from.
enum BlobSource {
    Bytes(Vec<u8>),
    File(PathBuf),
}

impl Remote for Registry {
    fn name(&self) -> String {
        self.reference.clone()
    }

    fn fetch(&self, stage: &str, key: &str, files: &[&str], into: &Path) -> Result<Option<String>> {
        self.guarded(Access::Read, None, || {
            let tag = format!("{stage}-{key}");
            let Some((digest, manifest)) = self.manifest(&tag)? else {
                return Ok(None);
            };
            let size = (manifest.layers.iter()).try_fold(0u64, |sum, l| sum.checked_add(l.size));
            if size.is_none_or(|size| size > ENTRY_CAP) {
                bail!(Unusable::refused(format!(
                    "the manifest of {tag} makes its entry larger than the {} GiB an entry may be",
                    ENTRY_CAP >> 30
                )));
            }
            for (layer, title) in entry_files(&tag, &manifest.layers, files)? {
                self.pull_blob(layer, &into.join(title))?;
            }
            Ok(Some(digest))
        })
    }

    fn has(&self, stage: &str, key: &str) -> Result<bool> {
        self.guarded(Access::Read, true, || {
            self.has_manifest(&format!("{stage}-{key}"))
        })
    }

    fn push(&self, stage: &str, key: &str, entry: &Path) -> Result<()> {
        self.guarded(Access::Write, (), || {
            let tag = format!("{stage}-{key}");
            // Keys name content: a tag that exists holds an equivalent entry already.
            if self.has_manifest(&tag)? {
                return Ok(());
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(entry)
                .with_context(|| format!("cannot read {}", entry.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let mut layers = Vec::new();
            for file in files {
                let (mut d, _) = self.push_blob(BlobSource::File(file.clone()), FILE_TYPE)?;
                let title = file.file_name().unwrap().to_string_lossy().into_owned();
                d.annotations.insert(TITLE.to_string(), title);
                layers.push(d);
            }
            let config = serde_json::to_vec(&serde_json::json!({ "stage": stage, "key": key }))?;
            let manifest = Manifest {
                schema_version: 2,
                media_type: MANIFEST_TYPE.to_string(),
                config: self.push_blob(BlobSource::Bytes(config), CONFIG_TYPE)?.0,
                layers,
            };
            let body = serde_json::to_vec(&manifest)?;
            self.send_manifest(&tag, MANIFEST_TYPE, &body).map(|_| ())
        })
    }
}

/// The layers of the entry `tag` with the file each is, if they are exactly `files`, once each.
/// Titles are the registry's words: they are shown escaped.
fn entry_files<'m>(
    tag: &str,
    layers: &'m [Descriptor],
    files: &[&str],
) -> Result<Vec<(&'m Descriptor, &'m str)>> {
    let expected = files.join(", ");
    if layers.len() != files.len() {
        bail!(
            "{tag} has {} layers; its entry is {expected}, one layer each; refused",
            layers.len()
        );
    }
    let mut out: Vec<(&Descriptor, &str)> = Vec::new();
    for layer in layers {
        let Some(title) = layer.annotations.get(TITLE) else {
            bail!("a layer of {tag} has no title, so it names no file; refused");
        };
        if title.is_empty() || title.starts_with('.') || title.contains(['/', '\\']) {
            bail!("a layer of {tag} is titled {title:?}, not a plain file name; refused");
        }
        if !files.contains(&title.as_str()) {
            bail!(
                "a layer of {tag} is titled {title:?}, which is not a file of its entry \
                 ({expected}); refused"
            );
        }
        if out.iter().any(|(_, t)| t == title) {
            bail!("{tag} has 2 layers titled {title:?}; refused");
        }
        out.push((layer, title));
    }
    Ok(out)
}

/// A user name and password.
type Login = (String, String);

/// A failure that makes the registry unusable for the rest of the run (it cannot be reached,
/// will not let us in, or cannot take more), as opposed to one bad entry.
#[derive(Debug)]
struct Unusable {
    text: String,
    /// It could not be reached at all (rather than refusing or failing one request).
    unreachable: bool,
}

impl Unusable {
    fn unreachable(text: String) -> Unusable {
        Unusable {
            text,
            unreachable: true,
        }
    }

    fn refused(text: String) -> Unusable {
        Unusable {
            text,
            unreachable: false,
        }
    }
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Unusable {}

/// `resp` if it succeeded; otherwise an error naming `what`, the status and the registry's words.
fn checked(resp: Response, what: &str) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let mut body = Vec::new();
    // The registry's words are a hint: a stalled or endless body gives what came.
    let _ = resp.take(ERROR_CAP).read_to_end(&mut body);
    let body = String::from_utf8_lossy(&body);
    let said: String = body
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let said = printable(&said);
    let error = Unusable::refused(format!("{what}: HTTP {status} {said}"));
    match status {
        // The registry refuses us or cannot store more: no later call will fare better.
        StatusCode::UNAUTHORIZED
        | StatusCode::FORBIDDEN
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::INSUFFICIENT_STORAGE
        | StatusCode::TOO_MANY_REQUESTS => Err(error.into()),
        s if s.is_server_error() => Err(error.into()),
        _ => bail!("{error}"),
    }
}

/// The body of `resp`, refused when it is longer than `cap` bytes (looking no further).
fn read_capped(resp: Response, cap: u64, what: &str) -> Result<Vec<u8>> {
    let over = || Unusable::refused(format!("{what}: more than {} MiB, refused", cap >> 20));
    if resp.content_length().is_some_and(|len| len > cap) {
        return Err(over().into());
    }
    let mut body = Vec::new();
    resp.take(cap + 1)
        .read_to_end(&mut body)
        .map_err(|e| Unusable::unreachable(format!("{what}: {e}")))?;
    match body.len() as u64 > cap {
        true => Err(over().into()),
        false => Ok(body),
    }
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// An HTTP client error on one line, with its causes.
fn one_line(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `text` from the registry (a title, an error body, a URL) safe to print: control characters
/// and those that reorder a line are escaped, so it cannot rewrite the terminal or a log.
fn printable(text: &str) -> String {
    let reorders = |c: char| matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    text.chars()
        .map(|c| match c.is_control() || reorders(c) {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Splits `host[:port]/repository`, checking both parts.
fn parse_reference(flag: &str, reference: &str) -> Result<(String, String)> {
    let example = "registry.example.com/team/python-fips-cache";
    if reference.contains("://") {
        bail!(
            "{flag} {reference:?}: give host/repository without a scheme, e.g. \
             {example} (HTTPS is used, and plain HTTP for a loopback host only)"
        );
    }
    let Some((host, repository)) = reference.split_once('/') else {
        bail!("{flag} {reference:?} names no repository; give host/repository, e.g. {example}");
    };
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        bail!(
            "{flag} {reference:?} does not start with a registry host (a name with a \
             dot or a port, or localhost); give host/repository, e.g. {example}"
        );
    }
    let port = match host.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").map(|(_, p)| p),
        None => host.split_once(':').map(|(_, p)| p),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        bail!("{flag} {reference:?}: the port of {host:?} is not a number, e.g. {example}");
    }
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
    if repository.is_empty()
        || !repository.chars().all(valid)
        || repository.split('/').any(str::is_empty)
    {
        bail!(
            "{flag} {reference:?}: the repository {repository:?} must be lowercase \
             letters, digits, `.`, `_`, `-` and `/` (no tag or digest), e.g. {example}"
        );
    }
    Ok((host.to_string(), repository.to_string()))
}

/// Whether `host` (`name[:port]`) is this machine's loopback, the only place plain HTTP is used.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `key="value"` pairs of an authentication challenge's parameters.
fn parse_challenge(params: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.insert(key, value.to_string());
        rest = after.trim_start_matches(',').trim();
    }
    out
}

/// The user's login for `host`: podman's auth file, then docker's config and its credential
/// helpers, as `docker login` and `podman login` leave them.
fn login_for(host: &str) -> Option<(String, String)> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => files.push(PathBuf::from(dir).join("config.json")),
        None => files.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    files.iter().find_map(|f| {
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(f).ok()?).ok()?;
        login_in(&config, host, &helper_login)
    })
}

/// The login for `host` in one config file: its `auths` entry, or what its credential helper
/// (`credHelpers` for the host, else `credsStore`) answers through `ask`.
fn login_in(
    config: &serde_json::Value,
    host: &str,
    ask: &dyn Fn(&str, &str) -> Option<Login>,
) -> Option<(String, String)> {
    let helper = config["credHelpers"][host]
        .as_str()
        .or_else(|| config["credsStore"].as_str());
    if let Some(found) = helper.and_then(|h| ask(h, host)) {
        return Some(found);
    }
    let auths = config["auths"].as_object()?;
    let (_, entry) = auths.iter().find(|(server, _)| {
        let server = server
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        server.split('/').next() == Some(host)
    })?;
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str()?)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Asks the credential helper `docker-credential-<helper>` for `host`'s login.
fn helper_login(helper: &str, host: &str) -> Option<(String, String)> {
    let mut child = std::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(host.as_bytes()).ok()?;
    // A helper that waits for a desktop's keyring must not hold the build.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some((
        answer["Username"].as_str()?.to_string(),
        answer["Secret"].as_str()?.to_string(),
    ))
}

#[cfg(test)]
mod tests;
