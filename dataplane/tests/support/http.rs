//! Raw HTTP/1.1 over a blocking `TcpStream`. Tests write exact bytes (bad
//! heads, pipelined requests, slow trickles), so no client library stands
//! between them and the server, and every read and write has a timeout.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use veza_proto::error_body::ErrorBody;

/// How long a single read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A response head longer than this is a server bug, not something to buffer.
const RESPONSE_HEAD_BYTES_MAX: usize = 64 * 1024;

/// A response as the client saw it.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, for example 200.
    pub status: u16,
    /// Header fields in order, as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether header `name` lists `token`, as in `Connection: close`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| value.split(','))
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    }

    /// The body as text, lossily, for messages.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; fails the test if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {:?}", self.body_text()))
    }

    /// Asserts that this is the JSON error `name` with `status`, the shape of
    /// every HTTP error: `{"error": "<name>", "detail": "<sentence>"}`.
    pub fn assert_error(&self, status: u16, name: &str) {
        assert_eq!(
            self.status,
            status,
            "expected status {status} for error {name:?}; body: {:?}",
            self.body_text()
        );
        let content_type = self.header("content-type").unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "error {name} must be JSON, got content-type {content_type:?}"
        );
        let body: ErrorBody = serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "error body is not {{error, detail}} ({error}): {:?}",
                self.body_text()
            )
        });
        assert_eq!(body.error, name, "stable error name");
        assert!(
            !body.detail.trim().is_empty(),
            "detail must explain the error"
        );
    }

    /// Asserts that the response announces that the server closes the
    /// connection, as every error after which a connection cannot be trusted
    /// must.
    pub fn assert_connection_close(&self) {
        assert!(
            self.header_has_token("connection", "close"),
            "status {} must carry `Connection: close`; headers: {:?}",
            self.status,
            self.headers
        );
    }
}

/// One client connection that can send raw bytes and read responses in order.
pub struct HttpConnection {
    stream: TcpStream,
    // Bytes read past the end of the last response (pipelined answers).
    buffer: Vec<u8>,
}

impl HttpConnection {
    /// Connects to `addr`; fails the test if that takes over [`IO_TIMEOUT`].
    pub fn open(addr: SocketAddr) -> Self {
        Self::try_open(addr, IO_TIMEOUT)
            .unwrap_or_else(|error| panic!("connect to {addr}: {error}"))
    }

    /// Connects to `addr` with `timeout` for the connect and for every I/O.
    pub fn try_open(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Connects to `addr` with a receive buffer of about `receive_buffer_bytes`
    /// (set before connecting, so the advertised window stays small): a
    /// client that reads slowly, or not at all.
    pub fn open_with_receive_buffer(addr: SocketAddr, receive_buffer_bytes: usize) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("create a socket");
        socket
            .set_recv_buffer_size(receive_buffer_bytes)
            .expect("set SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), IO_TIMEOUT)
            .unwrap_or_else(|error| panic!("connect to {addr}: {error}"));
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("set a read timeout");
        stream
            .set_write_timeout(Some(IO_TIMEOUT))
            .expect("set a write timeout");
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// The socket, for tests that need to clone it or set options.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket and any bytes already read past the last response, for a
    /// connection that switches protocols after a 101.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buffer)
    }

    /// Writes all of `bytes`; fails the test on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|error| panic!("write {} bytes: {error}", bytes.len()));
    }

    /// Writes all of `bytes`.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends one raw request and reads its response.
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }

    /// Reads the next response; fails the test on error.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false)
            .unwrap_or_else(|error| panic!("read a response: {error}"))
    }

    /// Reads the next response to a `HEAD` request (headers only).
    pub fn read_response_to_head(&mut self) -> Response {
        self.try_read_response(true)
            .unwrap_or_else(|error| panic!("read a response to HEAD: {error}"))
    }

    /// Reads the next response. `to_head` says the request was `HEAD`, whose
    /// response has no body whatever its Content-Length says.
    pub fn try_read_response(&mut self, to_head: bool) -> io::Result<Response> {
        let (status, headers) = self.read_head()?;
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let has_body = !to_head && !matches!(status, 100..=199 | 204 | 304);
        if !has_body {
            return Ok(response);
        }
        if response.header_has_token("transfer-encoding", "chunked") {
            response.body = self.read_chunked_body()?;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .trim()
                .parse()
                .map_err(|_| invalid("bad Content-Length"))?;
            response.body = self.read_exact_bytes(length)?;
        } else {
            response.body = self.read_to_end()?;
        }
        Ok(response)
    }

    /// Waits up to `limit` for the server to close the connection (end of
    /// stream or reset). Returns how long that took; an error says what
    /// happened instead (more bytes arrived, or nothing did).
    pub fn closed_by_server(&mut self, limit: Duration) -> Result<Duration, String> {
        if !self.buffer.is_empty() {
            return Err(format!(
                "{} unread bytes: {:?}",
                self.buffer.len(),
                self.buffered_text()
            ));
        }
        let started = Instant::now();
        let outcome = wait_for_end_of_stream(&mut self.stream, limit);
        outcome.map(|()| started.elapsed())
    }

    /// Fails the test unless the server closes the connection within `limit`.
    pub fn assert_closed_by_server(&mut self, limit: Duration) {
        if let Err(reason) = self.closed_by_server(limit) {
            panic!("the server must close the connection within {limit:?}: {reason}");
        }
    }

    fn buffered_text(&self) -> String {
        String::from_utf8_lossy(&self.buffer[..self.buffer.len().min(200)]).into_owned()
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n_read = self.stream.read(&mut chunk)?;
        if n_read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed with {} bytes pending", self.buffer.len()),
            ));
        }
        self.buffer.extend_from_slice(&chunk[..n_read]);
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = find(&self.buffer, b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if self.buffer.len() > RESPONSE_HEAD_BYTES_MAX {
                return Err(invalid("line too long"));
            }
            self.fill()?;
        }
    }

    fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        let status_line = self.read_line()?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(&format!(
                "not an HTTP/1 status line: {status_line:?}"
            )));
        }
        let status = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(&format!("no status code in {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok((status, headers));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(&format!("malformed header line {line:?}")))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }

    fn read_exact_bytes(&mut self, length: usize) -> io::Result<Vec<u8>> {
        while self.buffer.len() < length {
            self.fill()?;
        }
        Ok(self.buffer.drain(..length).collect())
    }

    fn read_chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.read_line()?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(&format!("bad chunk size line {size_line:?}")))?;
            if size == 0 {
                // Trailer fields, then the empty line that ends the body.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.read_exact_bytes(size)?);
            if !self.read_line()?.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill() {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(std::mem::take(&mut self.buffer));
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Reads from `stream` until the peer closes it or `limit` passes. Data that
/// arrives meanwhile is an error: the peer was expected to be done.
pub fn wait_for_end_of_stream(stream: &mut TcpStream, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!("still open after {limit:?}"));
        }
        stream
            .set_read_timeout(Some(remaining))
            .expect("set a read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n_read) => {
                let text = String::from_utf8_lossy(&chunk[..n_read.min(200)]).into_owned();
                return Err(format!("it sent {n_read} more bytes instead: {text:?}"));
            }
            Err(error) if is_reset(&error) => return Ok(()),
            Err(error) if is_timeout(&error) => continue,
            Err(error) => return Err(format!("read failed: {error}")),
        }
    }
}

/// Whether `error` means the peer reset or already closed the connection.
pub fn is_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Whether `error` is a socket timeout.
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `GET path` on a new connection; fails the test on any I/O error.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    try_get(addr, path, IO_TIMEOUT).unwrap_or_else(|error| panic!("GET {path}: {error}"))
}

/// `GET path` on a new connection with `timeout` for every step.
pub fn try_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let mut connection = HttpConnection::try_open(addr, timeout)?;
    connection.try_send(&get_request(path))?;
    connection.try_read_response(false)
}

/// The bytes of a keep-alive `GET path` request.
pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// The bytes of a keep-alive `POST path` request with a Content-Length body.
pub fn post_request(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}
