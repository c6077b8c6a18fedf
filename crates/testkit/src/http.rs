//! [`FileServer`]: a small HTTP/1.1 server on 127.0.0.1 serving files set by the test, with an
//! `ETag` per version and `304 Not Modified` for a matching `If-None-Match`. It counts full
//! answers and revalidations, so tests can tell a download from a cache hit.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Files {
    /// Path -> (contents, etag).
    files: HashMap<String, (Vec<u8>, String)>,
    /// Path -> where it redirects.
    redirects: HashMap<String, String>,
    full: usize,
    not_modified: usize,
    version: u64,
}

/// See the module docs.
#[derive(Clone)]
pub struct FileServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    files: Arc<Mutex<Files>>,
}

impl FileServer {
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind file server");
        let addr = listener.local_addr().expect("addr").to_string();
        let files = Arc::new(Mutex::new(Files::default()));
        let served = files.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let served = served.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &served);
                });
            }
        });
        FileServer { addr, files }
    }

    /// Serves `contents` at `path` (`/dir/name`) under a new `ETag`.
    pub fn put(&self, path: &str, contents: &[u8]) {
        let mut files = self.files.lock().expect("files");
        files.version += 1;
        let etag = format!("\"v{}\"", files.version);
        files
            .files
            .insert(path.to_owned(), (contents.to_vec(), etag));
    }

    /// Answers `path` with a `302` to `to`.
    pub fn redirect(&self, path: &str, to: &str) {
        let mut files = self.files.lock().expect("files");
        files.redirects.insert(path.to_owned(), to.to_owned());
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// (full `200` answers, `304` answers) so far.
    pub fn counts(&self) -> (usize, usize) {
        let files = self.files.lock().expect("files");
        (files.full, files.not_modified)
    }
}

fn serve(stream: TcpStream, files: &Mutex<Files>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let path = path.split('?').next().unwrap_or("/").to_owned();
    let mut if_none_match = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("if-none-match")
        {
            if_none_match = Some(v.trim().to_owned());
        }
    }
    let mut out = stream;
    let mut files = files.lock().expect("files");
    if let Some(to) = files.redirects.get(&path) {
        let head = format!(
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return out.write_all(head.as_bytes());
    }
    let Some((contents, etag)) = files.files.get(&path).cloned() else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    if if_none_match.as_deref() == Some(etag.as_str()) {
        files.not_modified += 1;
        let head = format!(
            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return out.write_all(head.as_bytes());
    }
    files.full += 1;
    drop(files);
    let head = format!(
        "HTTP/1.1 200 OK\r\nETag: {etag}\r\nLast-Modified: Tue, 15 Nov 1994 08:12:31 GMT\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        contents.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(&contents)?;
    out.flush()
}
