//! Test helpers: self-cleaning temporary directories and a loopback HTTP server with scripted faults.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("xtask-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the server does when a path is requested.
#[derive(Clone)]
pub enum Behaviour {
    /// Serves these bytes, answering `Range: bytes=N-` with 206.
    Serve(Vec<u8>),
    /// Announces the full length, sends only the first `cut` bytes and closes the connection,
    /// once; later requests are served like `Serve`.
    DropOnce { body: Vec<u8>, cut: usize },
    /// Answers with this status and an empty body, every time.
    Status(u16),
    /// Like `Serve`, but every response stops after `chunk` bytes of the requested range and
    /// closes the connection (announcing the full length): a flaky server that makes progress.
    DropEvery { body: Vec<u8>, chunk: usize },
    /// Like `Serve`, but sends `step` bytes every `every`: a server slower than any deadline.
    Drip {
        body: Vec<u8>,
        step: usize,
        every: std::time::Duration,
    },
    /// Sends the body without a `Content-Length` and closes the connection at its end.
    Unsized(Vec<u8>),
    /// Announces `length` in `Content-Length` whatever the body is.
    Announce { body: Vec<u8>, length: u64 },
    /// Answers `302 Found` with this `Location`.
    Redirect(String),
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    /// The `N` of a `Range: bytes=N-` header.
    pub range_from: Option<u64>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Behaviour>,
    requests: Vec<Request>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1, one connection at a time, `Connection: close` always.
/// Unknown paths get 404. The accepting thread lives until the test process exits.
pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = handle(stream, &shared);
                });
            }
        });
        Server { addr, state }
    }

    /// Sets what `path` (starting with `/`) does.
    pub fn route(&self, path: &str, behaviour: Behaviour) {
        let mut state = self.state.lock().unwrap();
        state.routes.insert(path.to_string(), behaviour);
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range_from = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(spec) = lower.strip_prefix("range: bytes=") {
            range_from = spec.trim().trim_end_matches('-').parse().ok();
        }
    }
    let behaviour = {
        let mut state = state.lock().unwrap();
        state.requests.push(Request {
            path: path.clone(),
            range_from,
        });
        let behaviour = state.routes.get(&path).cloned();
        // A connection is dropped only once: later requests for the path are served in full.
        if let Some(Behaviour::DropOnce { body, .. }) = &behaviour {
            state
                .routes
                .insert(path.clone(), Behaviour::Serve(body.clone()));
        }
        behaviour
    };
    let mut out = stream;
    let head = |len: usize, from: usize, total: usize| {
        let status = if from > 0 {
            format!(
                "206 Partial Content\r\nContent-Range: bytes {from}-{}/{total}",
                total - 1
            )
        } else {
            "200 OK".to_string()
        };
        format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let from = range_from.unwrap_or(0) as usize;
    match behaviour {
        None => respond(&mut out, "404 Not Found", &[], b""),
        Some(Behaviour::DropEvery { body, chunk }) => {
            let from = from.min(body.len());
            out.write_all(head(body.len() - from, from, body.len()).as_bytes())?;
            out.write_all(&body[from..(from + chunk).min(body.len())])?;
            out.flush()
        }
        Some(Behaviour::Drip { body, step, every }) => {
            let from = from.min(body.len());
            out.write_all(head(body.len() - from, from, body.len()).as_bytes())?;
            for piece in body[from..].chunks(step) {
                out.write_all(piece)?;
                out.flush()?;
                std::thread::sleep(every);
            }
            Ok(())
        }
        Some(Behaviour::Unsized(body)) => {
            out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            out.write_all(&body)?;
            out.flush()
        }
        Some(Behaviour::Announce { body, length }) => {
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n");
            out.write_all(head.as_bytes())?;
            out.write_all(&body)?;
            out.flush()
        }
        Some(Behaviour::Redirect(location)) => respond(
            &mut out,
            "302 Found",
            &[&format!("Location: {location}")],
            b"",
        ),
        Some(Behaviour::Status(code)) => respond(&mut out, &format!("{code} Scripted"), &[], b""),
        Some(Behaviour::DropOnce { body, cut }) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            out.write_all(head.as_bytes())?;
            out.write_all(&body[..cut])?;
            out.flush()
        }
        Some(Behaviour::Serve(body)) => match range_from {
            Some(from) if (from as usize) < body.len() => {
                let from = from as usize;
                let range = format!(
                    "Content-Range: bytes {from}-{}/{}",
                    body.len() - 1,
                    body.len()
                );
                respond(&mut out, "206 Partial Content", &[&range], &body[from..])
            }
            Some(_) => respond(&mut out, "416 Range Not Satisfiable", &[], b""),
            None => respond(&mut out, "200 OK", &[], &body),
        },
    }
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[&str],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
