//! A Python WSGI origin (the standard library's `wsgiref`, so it runs wherever python3
//! does): the same app a Flask service behind `ProxyFix(x_host=1)` is, in a few lines. It
//! builds its absolute URLs the way Werkzeug's `url_for(_external=True)` does, from
//! `X-Forwarded-Host`, else `Host`, else its own address; and like every WSGI server it reads
//! `X_Forwarded_Host` and `X-Forwarded-Host` as one environ key.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

const APP: &str = r#"
import sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def app(environ, start_response):
    path = environ['PATH_INFO']
    host = environ.get('HTTP_X_FORWARDED_HOST') or environ.get('HTTP_HOST') \
        or '%s:%s' % (environ['SERVER_NAME'], environ['SERVER_PORT'])
    scheme = environ.get('HTTP_X_FORWARDED_PROTO', 'http')
    url = '%s://%s%s' % (scheme, host, path)
    body = ('url: %s\n' % url).encode()
    headers = [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))]
    status = '200 OK'
    if path.startswith('/go'):
        status = '302 Found'
        headers.append(('Location', '%s://%s/login' % (scheme, host)))
    start_response(status, headers)
    return [body]

server = make_server('127.0.0.1', 0, app, handler_class=Quiet)
print(server.server_port, flush=True)
server.serve_forever()
"#;

/// The running app; killed on drop.
pub struct WsgiOrigin {
    child: Child,
    addr: SocketAddr,
}

impl WsgiOrigin {
    /// Starts the app and returns once it is listening (it prints its port after binding).
    pub fn start() -> Self {
        let mut child = Command::new("python3")
            .args(["-c", APP])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (the WSGI origin needs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("the WSGI origin prints its port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the WSGI origin did not start: {line:?}"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for WsgiOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
