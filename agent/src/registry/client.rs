//! An OCI distribution API client for one repository on one registry:
//! manifests, blobs, and the auth dance (401 → challenge → token → retry).
//!
//! Written on ureq rather than taken from oci-client: oci-client is async and
//! brings reqwest with aws-lc-rs (a large C build) to a tool whose store is
//! synchronous; the read side of the protocol is four requests, and the
//! resumable blob reader below is what socle needs and no crate offers.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::Response;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::auth::{Challenge, Credentials};

/// Token responses and, unless `--limit json-size` says otherwise,
/// manifests and configs are small; anything bigger is not an image.
pub const MAX_JSON: u64 = 4 << 20;
/// Attempts per blob before a download counts as failed.
const BLOB_ATTEMPTS: u32 = 4;

pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot connect to {registry}: {message}")]
    Connect { registry: String, message: String },
    #[error("{what} not found in {registry}/{repository} (HTTP 404)")]
    NotFound {
        what: String,
        registry: String,
        repository: String,
    },
    #[error(
        "{registry} requires authentication: pass --creds USER:PASSWORD, or log in with podman/skopeo/docker login (socle reads their auth files)"
    )]
    AuthRequired { registry: String },
    #[error("{registry} rejected the credentials from {origin} (HTTP {status})")]
    BadCredentials {
        registry: String,
        origin: String,
        status: u16,
    },
    #[error("{registry} denied access to {repository} (HTTP 403)")]
    Denied {
        registry: String,
        repository: String,
    },
    #[error("{what} from {registry} is over the {limit} limit ({size} bytes; {hint})", hint = crate::archive::JSON_LIMIT_HINT)]
    TooLarge {
        what: String,
        registry: String,
        size: String,
        limit: String,
    },
    #[error("{registry}: {what}: HTTP {status} {detail}")]
    Http {
        registry: String,
        what: String,
        status: u16,
        detail: String,
    },
}

type Result<T> = std::result::Result<T, RegistryError>;

#[derive(Debug, Clone)]
enum Auth {
    Anonymous,
    Basic,
    Bearer(String),
}

pub struct Client {
    agent: Agent,
    /// `https://host:port` or, for an insecure registry that has no TLS,
    /// `http://host:port`.
    base: String,
    pub registry: String,
    pub repository: String,
    creds: Option<Credentials>,
    auth: Mutex<Auth>,
    /// Bearer tokens by scope, so a second request does not ask again.
    tokens: Mutex<HashMap<String, String>>,
    /// Bytes a manifest, index or config may have.
    json_limit: u64,
}

fn agent(insecure: bool) -> Agent {
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::PlatformVerifier)
        .disable_verification(insecure)
        .build();
    Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .max_redirects(10)
        .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        // A stalled transfer fails and is resumed rather than hanging.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("socle/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn connect_error(registry: &str, e: ureq::Error) -> RegistryError {
    let message = match &e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::HostNotFound => "host not found".into(),
        other => other.to_string(),
    };
    RegistryError::Connect {
        registry: registry.to_string(),
        message,
    }
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The first line of an error body, for messages.
fn body_detail(resp: &mut Response<Body>) -> String {
    let text = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    let line: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if line.is_empty() {
        String::new()
    } else {
        format!("({line})")
    }
}

impl Client {
    /// The same client, taking manifests, indexes and configs of up to
    /// `bytes`.
    pub fn with_json_limit(mut self, bytes: u64) -> Client {
        self.json_limit = bytes;
        self
    }

    /// Connects to `registry` and finds out how it wants to be spoken to
    /// (`GET /v2/`). An insecure registry is tried over HTTPS without
    /// certificate checks first, then over plain HTTP.
    pub fn connect(
        registry: &str,
        repository: &str,
        insecure: bool,
        creds: Option<Credentials>,
    ) -> Result<Client> {
        let host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let agent = agent(insecure);
        let schemes: &[&str] = if insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for scheme in schemes {
            let base = format!("{scheme}://{host}");
            match agent.get(format!("{base}/v2/")).call() {
                Ok(resp) => {
                    let client = Client {
                        agent,
                        base,
                        registry: registry.to_string(),
                        repository: repository.to_string(),
                        creds,
                        auth: Mutex::new(Auth::Anonymous),
                        tokens: Mutex::new(HashMap::new()),
                        json_limit: MAX_JSON,
                    };
                    if resp.status() == 401 {
                        if let Some(c) = header(&resp, "www-authenticate") {
                            client.authenticate(&c)?;
                        }
                    }
                    return Ok(client);
                }
                Err(e) => {
                    let refused = matches!(&e, ureq::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::ConnectionRefused);
                    let mut err = connect_error(registry, e);
                    if let RegistryError::Connect { message, .. } = &mut err {
                        if !insecure && !refused {
                            message.push_str(
                                " (if it serves plain HTTP or a self-signed certificate, pass \
                                 --tls-verify=false or set insecure = true for it in registries.conf)",
                            );
                        }
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.expect("at least one scheme was tried"))
    }

    fn repo_url(&self, kind: &str, reference: &str) -> String {
        format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository)
    }

    fn auth_header(&self) -> Option<String> {
        match &*self.auth.lock().expect("auth lock") {
            Auth::Anonymous => None,
            Auth::Basic => self.creds.as_ref().map(Credentials::basic_header),
            Auth::Bearer(t) => Some(format!("Bearer {t}")),
        }
    }

    fn unauthorized(&self, status: u16) -> RegistryError {
        match &self.creds {
            Some(c) => RegistryError::BadCredentials {
                registry: self.registry.clone(),
                origin: c.origin.clone(),
                status,
            },
            None => RegistryError::AuthRequired {
                registry: self.registry.clone(),
            },
        }
    }

    /// Answers a 401's challenge: Basic uses the credentials as they are;
    /// Bearer trades them (or nothing, for public images) for a token.
    fn authenticate(&self, www_authenticate: &str) -> Result<()> {
        let new = match Challenge::parse(www_authenticate) {
            Some(Challenge::Basic) => {
                if self.creds.is_none() {
                    return Err(self.unauthorized(401));
                }
                Auth::Basic
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: _,
            }) => {
                // Always ask for our own repository's pull scope: the ping's
                // challenge names none.
                let scope = format!("repository:{}:pull", self.repository);
                if let Some(t) = self.tokens.lock().expect("token lock").get(&scope) {
                    *self.auth.lock().expect("auth lock") = Auth::Bearer(t.clone());
                    return Ok(());
                }
                let token = self.fetch_token(&realm, service.as_deref(), &scope)?;
                self.tokens
                    .lock()
                    .expect("token lock")
                    .insert(scope, token.clone());
                Auth::Bearer(token)
            }
            None => {
                return Err(RegistryError::Http {
                    registry: self.registry.clone(),
                    what: "authentication".into(),
                    status: 401,
                    detail: format!("(unsupported challenge {www_authenticate:?})"),
                })
            }
        };
        *self.auth.lock().expect("auth lock") = new;
        Ok(())
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut req = self.agent.get(realm).query("scope", scope);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if let Some(c) = &self.creds {
            req = req.header("Authorization", c.basic_header());
        }
        let mut resp = req.call().map_err(|e| connect_error(realm, e))?;
        match resp.status().as_u16() {
            200 => {}
            s @ (401 | 403) => return Err(self.unauthorized(s)),
            s => {
                return Err(RegistryError::Http {
                    registry: self.registry.clone(),
                    what: format!("token from {realm}"),
                    status: s,
                    detail: body_detail(&mut resp),
                })
            }
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON)
            .read_to_vec()
            .map_err(|e| connect_error(realm, e))?;
        let t: Token = serde_json::from_slice(&body).map_err(|e| RegistryError::Http {
            registry: self.registry.clone(),
            what: format!("token from {realm}"),
            status: 200,
            detail: format!("(not a token response: {e})"),
        })?;
        t.token
            .or(t.access_token)
            .ok_or_else(|| RegistryError::Http {
                registry: self.registry.clone(),
                what: format!("token from {realm}"),
                status: 200,
                detail: "(no token in the response)".into(),
            })
    }

    /// GET with the current credentials; a 401 is answered once.
    fn get(&self, url: &str, accept: Option<&str>, from: u64) -> Result<Response<Body>> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if from > 0 {
                req = req.header("Range", format!("bytes={from}-"));
            }
            if let Some(h) = self.auth_header() {
                req = req.header("Authorization", h);
            }
            let resp = req.call().map_err(|e| connect_error(&self.registry, e))?;
            match resp.status().as_u16() {
                401 if attempt == 0 => {
                    let challenge = header(&resp, "www-authenticate").unwrap_or_default();
                    self.authenticate(&challenge)?;
                }
                401 => return Err(self.unauthorized(401)),
                403 => {
                    return Err(RegistryError::Denied {
                        registry: self.registry.clone(),
                        repository: self.repository.clone(),
                    })
                }
                _ => return Ok(resp),
            }
        }
        Err(self.unauthorized(401))
    }

    fn check(&self, mut resp: Response<Body>, what: &str) -> Result<Response<Body>> {
        match resp.status().as_u16() {
            200 | 206 => Ok(resp),
            404 => Err(RegistryError::NotFound {
                what: what.into(),
                registry: self.registry.clone(),
                repository: self.repository.clone(),
            }),
            s => Err(RegistryError::Http {
                registry: self.registry.clone(),
                what: what.into(),
                status: s,
                detail: body_detail(&mut resp),
            }),
        }
    }

    /// Reads a small JSON document (manifest, config), refusing anything
    /// over the client's JSON limit.
    fn read_small(&self, mut resp: Response<Body>, what: &str) -> Result<Vec<u8>> {
        let too_large = |size: String| RegistryError::TooLarge {
            what: what.into(),
            registry: self.registry.clone(),
            size,
            limit: crate::limits::human(self.json_limit),
        };
        if let Some(len) = resp.body().content_length() {
            if len > self.json_limit {
                return Err(too_large(len.to_string()));
            }
        }
        let mut buf = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(self.json_limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| RegistryError::Connect {
                registry: self.registry.clone(),
                message: format!("reading {what}: {e}"),
            })?;
        if buf.len() as u64 > self.json_limit {
            return Err(too_large(format!("more than {}", self.json_limit)));
        }
        Ok(buf)
    }

    /// A manifest or index by tag or digest: its bytes and media type.
    pub fn manifest(&self, reference: &str) -> Result<(Vec<u8>, Option<String>)> {
        let what = if reference.starts_with("sha256:") {
            format!("manifest {reference}")
        } else {
            format!("tag {reference:?}")
        };
        let resp = self.get(
            &self.repo_url("manifests", reference),
            Some(MANIFEST_ACCEPT),
            0,
        )?;
        let resp = self.check(resp, &what)?;
        let media_type = header(&resp, "content-type")
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .filter(|c| c.starts_with("application/vnd."));
        Ok((self.read_small(resp, &what)?, media_type))
    }

    /// A small blob (an image config), read whole.
    pub fn small_blob(&self, digest: &str, what: &str) -> Result<Vec<u8>> {
        let resp = self.get(&self.repo_url("blobs", digest), None, 0)?;
        let resp = self.check(resp, what)?;
        self.read_small(resp, what)
    }

    /// A layer blob as a stream that survives dropped connections: it asks
    /// again from where it stopped (`Range`), up to [`BLOB_ATTEMPTS`] times.
    pub fn blob<'a>(&'a self, digest: &str, size: u64, cancel: &'a AtomicBool) -> BlobReader<'a> {
        BlobReader {
            client: self,
            digest: digest.to_string(),
            size,
            offset: 0,
            body: None,
            failures: 0,
            cancel,
        }
    }
}

pub struct BlobReader<'a> {
    client: &'a Client,
    digest: String,
    size: u64,
    offset: u64,
    body: Option<ureq::BodyReader<'static>>,
    failures: u32,
    cancel: &'a AtomicBool,
}

/// Why opening a blob failed, and whether asking again can help.
struct OpenError {
    error: io::Error,
    retry: bool,
}

impl BlobReader<'_> {
    fn open(&mut self) -> std::result::Result<ureq::BodyReader<'static>, OpenError> {
        let c = self.client;
        let what = format!("blob {}", self.digest);
        let fatal = |e: RegistryError| OpenError {
            retry: matches!(e, RegistryError::Connect { .. }),
            error: io::Error::other(e),
        };
        let resp = c
            .get(&c.repo_url("blobs", &self.digest), None, self.offset)
            .map_err(fatal)?;
        let status = resp.status().as_u16();
        if status >= 500 || status == 429 {
            return Err(OpenError {
                error: io::Error::other(format!("{what}: HTTP {status} from {}", c.registry)),
                retry: true,
            });
        }
        let resp = c.check(resp, &what).map_err(fatal)?;
        let mut body = resp.into_body().into_reader();
        if status == 200 && self.offset > 0 {
            // The server ignored Range: skip what we already have.
            io::copy(&mut (&mut body).take(self.offset), &mut io::sink()).map_err(|e| {
                OpenError {
                    error: e,
                    retry: true,
                }
            })?;
        }
        Ok(body)
    }

    /// Counts a failure; past the limit, the download has failed.
    fn failed(&mut self, e: io::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        if self.failures >= BLOB_ATTEMPTS {
            return Err(io::Error::other(format!(
                "download of {} from {} was cut short at {} of {} bytes after {} attempts: {e}",
                self.digest, self.client.registry, self.offset, self.size, self.failures
            )));
        }
        tracing::info!(
            "{}: {e}; resuming at byte {} (attempt {})",
            self.digest,
            self.offset,
            self.failures + 1
        );
        std::thread::sleep(Duration::from_millis(250 << self.failures));
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::other("cancelled"));
            }
            if self.offset >= self.size || buf.is_empty() {
                return Ok(0);
            }
            let body = match &mut self.body {
                Some(b) => b,
                None => match self.open() {
                    Ok(b) => self.body.insert(b),
                    Err(OpenError { error, retry: true }) => {
                        self.failed(error)?;
                        continue;
                    }
                    Err(OpenError { error, .. }) => return Err(error),
                },
            };
            let want = buf.len().min((self.size - self.offset) as usize);
            match body.read(&mut buf[..want]) {
                Ok(0) => self.failed(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed early",
                ))?,
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.failed(e)?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The token dance and redirects against a scripted registry: Debian's
    //! docker-registry (used by the tier-2 tests) speaks only Basic auth
    //! and serves blobs itself.
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Serves `requests` requests, one per connection, and counts token
    /// requests.
    fn scripted_registry(requests: usize) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tokens = Arc::new(AtomicUsize::new(0));
        let (a, t) = (addr.clone(), tokens.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(requests) {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(n) if n > 0 && line != "\r\n" => head.push(line.trim_end().to_string()),
                        _ => break,
                    }
                }
                // The client tries TLS first on an insecure registry.
                if !head.first().is_some_and(|l| l.starts_with("GET ")) {
                    continue;
                }
                let path = head[0].split(' ').nth(1).unwrap_or("").to_string();
                let auth = head
                    .iter()
                    .find_map(|h| {
                        h.strip_prefix("authorization: ")
                            .or(h.strip_prefix("Authorization: "))
                    })
                    .unwrap_or("")
                    .to_string();
                let (status, headers, body): (&str, String, Vec<u8>) = if path.starts_with("/token")
                {
                    t.fetch_add(1, Ordering::SeqCst);
                    let good = auth == Credentials::from_flag("ann:pw").unwrap().basic_header();
                    assert!(
                        path.contains("scope=repository%3Ateam%2Fapp%3Apull")
                            || path.contains("scope=repository:team/app:pull"),
                        "{path}"
                    );
                    if good {
                        ("200 OK", String::new(), br#"{"token":"T0K"}"#.to_vec())
                    } else {
                        ("401 Unauthorized", String::new(), Vec::new())
                    }
                } else if auth != "Bearer T0K" {
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: Bearer realm=\"http://{a}/token\",service=\"test\"\r\n"),
                        Vec::new(),
                    )
                } else if path == "/v2/team/app/manifests/1" {
                    (
                        "200 OK",
                        "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(),
                        b"{}".to_vec(),
                    )
                } else if path == "/v2/team/app/blobs/sha256:b" {
                    (
                        "307 Temporary Redirect",
                        "Location: /storage/b\r\n".into(),
                        Vec::new(),
                    )
                } else if path == "/storage/b" {
                    ("200 OK", String::new(), b"blob bytes".to_vec())
                } else {
                    ("404 Not Found", String::new(), Vec::new())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(&body);
            }
        });
        (addr, tokens)
    }

    #[test]
    fn bearer_token_is_fetched_once_and_redirects_are_followed() {
        let (addr, tokens) = scripted_registry(8);
        let creds = Credentials::from_flag("ann:pw").unwrap();
        let c = Client::connect(&addr, "team/app", true, Some(creds)).unwrap();
        let (bytes, mt) = c.manifest("1").unwrap();
        assert_eq!(bytes, b"{}");
        assert_eq!(
            mt.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        let cancel = AtomicBool::new(false);
        let mut out = Vec::new();
        c.blob("sha256:b", 10, &cancel)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"blob bytes");
        assert_eq!(tokens.load(Ordering::SeqCst), 1, "one token for the scope");
    }

    #[test]
    fn a_token_refused_is_a_credentials_error() {
        let (addr, _) = scripted_registry(4);
        let creds = Credentials::from_flag("ann:wrong").unwrap();
        let e = Client::connect(&addr, "team/app", true, Some(creds))
            .err()
            .expect("refused");
        let msg = e.to_string();
        assert!(
            msg.contains("rejected the credentials from --creds") && msg.contains(&addr),
            "{msg}"
        );
    }
}
