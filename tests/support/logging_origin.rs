//! A raw HTTP/1.1 origin that records the bytes of every request head it receives and
//! answers each with a fixed small response: what reached the origin, exactly as sent, with
//! no HTTP library in between to merge or reorder header lines.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub struct LoggingOrigin {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoggingOrigin {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let heads = Arc::clone(&heads);
            async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let heads = Arc::clone(&heads);
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        loop {
                            // One head at a time; requests here have no bodies.
                            while let Some(end) = find_head_end(&buf) {
                                let head: Vec<u8> = buf.drain(..end).collect();
                                heads
                                    .lock()
                                    .unwrap()
                                    .push(String::from_utf8_lossy(&head).into_owned());
                                let reply = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
                                if stream.write_all(reply).await.is_err() {
                                    return;
                                }
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                    });
                }
            }
        });
        Self { addr, heads, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request head received so far, as text.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for LoggingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}
