//! A scripted control-socket server for tests: a real `UnixListener` in a temporary
//! directory, serving one connection on a thread. A handler maps each request to what the
//! server writes back (lines, raw bytes, pauses, or closing the connection).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fw_proto::control::{Answer, ErrorCode, Event, Request, Role, ServerMsg, PROTOCOL_VERSION};

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "fw-tui-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
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

/// What the server does in answer to one request.
// A test double: a few of these per test, the size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Out {
    /// A message, serialized, with its newline.
    Msg(ServerMsg),
    /// Bytes as they are (no newline added): for broken JSON and split lines.
    Raw(String),
    Sleep(Duration),
    /// Closes the connection.
    Close,
}

pub fn ok(id: u64, answer: Answer) -> Out {
    Out::Msg(ServerMsg::Ok { id, answer })
}

pub fn error(id: Option<u64>, code: ErrorCode, message: &str) -> Out {
    Out::Msg(ServerMsg::Error { id, code, message: message.into() })
}

pub fn event(sub: u64, event: Event) -> Out {
    Out::Msg(ServerMsg::Event { sub, event })
}

pub fn hello_answer() -> Answer {
    Answer::Hello {
        version: PROTOCOL_VERSION,
        daemon: "9.9.9".into(),
        role: Role::Operator,
        user: "alice".into(),
    }
}

pub struct TestServer {
    _dir: TempDir,
    pub path: PathBuf,
    /// Every request received, in order.
    pub requests: Arc<Mutex<Vec<Request>>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves one connection; `handler` sees every request, hello included.
    pub fn raw<F>(mut handler: F) -> TestServer
    where
        F: FnMut(&Request) -> Vec<Out> + Send + 'static,
    {
        let dir = TempDir::new();
        let path = dir.path().join("fw.sock");
        let listener = UnixListener::bind(&path).expect("bind test socket");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let thread = std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else { return };
            let mut w = stream.try_clone().expect("clone");
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let req: Request =
                    serde_json::from_str(line.trim_end()).expect("client sent a valid request");
                seen.lock().unwrap().push(req.clone());
                for out in handler(&req) {
                    let res = match out {
                        Out::Msg(m) => {
                            let mut s = serde_json::to_string(&m).unwrap();
                            s.push('\n');
                            w.write_all(s.as_bytes())
                        }
                        Out::Raw(s) => w.write_all(s.as_bytes()),
                        Out::Sleep(d) => {
                            std::thread::sleep(d);
                            Ok(())
                        }
                        Out::Close => return,
                    };
                    if res.and_then(|()| w.flush()).is_err() {
                        return;
                    }
                }
            }
        });
        TestServer { _dir: dir, path, requests, thread: Some(thread) }
    }

    /// Answers hello as a daemon 9.9.9 speaking [`PROTOCOL_VERSION`] to `alice` (operator),
    /// and every other request with `handler`.
    pub fn start<F>(mut handler: F) -> TestServer
    where
        F: FnMut(&Request) -> Vec<Out> + Send + 'static,
    {
        TestServer::raw(move |req| match req.op {
            fw_proto::control::Op::Hello { .. } => vec![ok(req.id, hello_answer())],
            _ => handler(req),
        })
    }

    /// The requests received so far (waits for the server thread when it has finished).
    pub fn received(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The thread ends when the client disconnects; don't wait on a test that panicked.
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}
