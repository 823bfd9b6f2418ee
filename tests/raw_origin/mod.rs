//! A raw HTTP/1.1 origin: answers each request with bytes the test wrote by hand, so that it
//! can send what an HTTP library would refuse or tidy up (a non-ASCII byte in a directive,
//! several `Age` lines, interim responses before the final one). Counts requests per target.
//!
//! Requests are read as heads only (the tests send GETs); connections are kept alive, so
//! every answer must frame its body (`Content-Length`).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Answer = dyn Fn(&str) -> Vec<u8> + Send + Sync;

pub struct RawOrigin {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawOrigin {
    /// An origin that writes `answer(target)` for each request it reads.
    pub async fn start(answer: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw origin");
        let addr = listener.local_addr().expect("raw origin addr");
        let targets = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let task = tokio::spawn({
            let targets = Arc::clone(&targets);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, Arc::clone(&targets), Arc::clone(&answer)));
                }
            }
        });
        Self {
            addr,
            targets,
            task,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests for `target` (path and query) it answered.
    pub fn count_of(&self, target: &str) -> usize {
        let targets = self.targets.lock().unwrap();
        targets.iter().filter(|t| *t == target).count()
    }
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    targets: Arc<Mutex<Vec<String>>>,
    answer: Arc<Answer>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            let target = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            targets.lock().unwrap().push(target.clone());
            if stream.write_all(&answer(&target)).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A `200 OK` with `lines` (each `Name: value`, as raw bytes) and `body`, framed by
/// `Content-Length`.
pub fn ok(lines: &[&[u8]], body: &str) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
    for line in lines {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    out
}
