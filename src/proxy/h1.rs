//! HTTP/1.1 to the upstream, read in the task of the request it answers.
//!
//! hyper's client runs each connection in a task of its own: the request
//! is handed to that task through a channel and the answer comes back
//! through another, so every request paid for two hand-overs and a second
//! task's polls (about a sixth of the gateway's instructions per request,
//! benches/RESULTS.md). Here the request's task writes the request and
//! reads the answer itself.
//!
//! What could go wrong in hand-written HTTP/1 is where one answer ends: a
//! mistake would hand the rest of one user's answer to the next request on
//! the connection. So the framing is strict, and anything doubtful costs
//! the connection rather than risking it:
//! - heads are parsed by `httparse` (as hyper does), chunk-size lines too;
//! - a body is framed by `Transfer-Encoding: chunked`, a single
//!   `Content-Length`, or the connection's end; both headers, differing
//!   lengths or another transfer coding are refused (RFC 9112 §6.3);
//! - a connection is reused only when its answer was read exactly to its
//!   end, said nothing of closing, was HTTP/1.1, and no byte beyond the end
//!   had arrived.

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, HOST};
use http::{HeaderMap, Method, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::upstream_request::UpstreamRequest;

/// What an upstream connection is read and written through.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The size of a connection's read buffer: fixed instead of hyper's
/// adaptive buffer, so the one buffer a connection reads into (body data
/// is copied out of it, [`Frames`]) stays small and in cache (benches/RESULTS.md,
/// "Memory": hyper's adaptive buffer grew to 400 KiB and was reallocated
/// faster than it was purged). It grows only while more than this is
/// needed at once (a long head). Reads of up to 128 KiB streamed 1 GiB in
/// fewer reads (11.7k against 16.5k) and 5–10% faster, but a buffer of
/// any other size than the frames' blocks ([`BLOCK`]) raised the peak RSS
/// of a stream with the cache on by 4–6 MiB (benches/RESULTS.md, "Memory").
const READ_SIZE: usize = 64 * 1024;
/// The longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Headers the gateway may add to an answer on its way to the client.
const ADDED_HEADERS: usize = 12;
/// The longest chunk-size line (with its CRLF), however it arrives, and
/// the most trailer bytes, accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Chunk-extension bytes (after each line's `;`) in one body, over all its
/// chunks: fewer than this, as hyper allows.
const MAX_EXTENSIONS: usize = 16 * 1024;

/// Why an exchange or a body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Reading or writing the connection failed.
    #[error("upstream connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before its answer was complete.
    #[error("the upstream closed the connection before the answer was complete")]
    Closed,
    /// The response head is not valid HTTP/1.
    #[error("invalid response head: {0}")]
    Head(httparse::Error),
    /// The response head is longer than 64 KiB.
    #[error("the response head is too large")]
    HeadTooLarge,
    /// The answer's framing is ambiguous or not one the gateway reads.
    #[error("unacceptable response framing: {0}")]
    Framing(&'static str),
    /// A chunked body is malformed.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

/// An exchange that failed, and whether it may be tried again elsewhere:
/// only when not one byte of an answer arrived, on a connection the
/// upstream may have closed while it was idle.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: Error,
    pub(crate) nothing_received: bool,
}

/// One HTTP/1.1 connection to the upstream, idle between exchanges.
pub(crate) struct Conn {
    io: Box<dyn Io>,
    /// Bytes read and not yet consumed; empty whenever the connection is
    /// idle.
    buf: BytesMut,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub(crate) fn new(io: impl Io + 'static) -> Conn {
        Conn {
            io: Box::new(io),
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection looks usable: it has neither been closed
    /// nor sent anything unasked. Costs no system call while the socket
    /// has not become readable (the runtime's readiness says so).
    pub(crate) fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// Reads more into the buffer: the number of bytes read (0 at the end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let low = READ_SIZE / 8;
        if self.buf.capacity() - self.buf.len() < low {
            // Room up to `READ_SIZE` in all: the few bytes left unread are
            // moved to the start of the buffer, or into a new one if this
            // one is smaller. (`reserve` grows a buffer by half again
            // whenever a byte is left: 64 KiB became 128 KiB.)
            let room = (READ_SIZE - low).saturating_sub(self.buf.len()) + low;
            if !self.buf.try_reclaim(room) {
                let mut grown = BytesMut::with_capacity(self.buf.len() + room);
                grown.extend_from_slice(&self.buf);
                self.buf = grown;
            }
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes `req` (with `host` as its `Host`) and reads the answer's
    /// head; the body is read from the returned response's [`Body`].
    pub(crate) async fn send(
        mut self,
        req: &UpstreamRequest,
        host: &HeaderValue,
    ) -> Result<Response<Body>, Failed> {
        let failed = |error: Error, received: bool| Failed {
            error,
            nothing_received: !received,
        };
        debug_assert!(self.buf.is_empty());
        let head = encode(req, host);
        self.io
            .write_all(&head)
            .await
            .map_err(|e| failed(e.into(), false))?;
        self.io.flush().await.map_err(|e| failed(e.into(), false))?;
        let mut received = false;
        loop {
            if received {
                let parsed = self.parse_head(req.method() == Method::HEAD);
                if let Some((head, framing, keep_alive)) = parsed.map_err(|e| failed(e, true))? {
                    return Ok(head.map(|()| Body {
                        conn: Some(self),
                        framing,
                        keep_alive,
                        frames: Frames::default(),
                    }));
                }
            }
            match self.fill().await {
                Ok(0) => return Err(failed(Error::Closed, received)),
                Ok(_) => received = true,
                Err(e) => return Err(failed(e.into(), received)),
            }
        }
    }

    /// The response head, how its body is framed and whether the
    /// connection may be kept, once the whole head is buffered (interim
    /// `1xx` answers are skipped); `None` while more is needed.
    fn parse_head(
        &mut self,
        head_request: bool,
    ) -> Result<Option<(Response<()>, Framing, bool)>, Error> {
        let (len, parsed) = loop {
            // Left uninitialised: httparse writes those it fills.
            let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                &self.buf,
                &mut fields,
            ) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = resp.code.unwrap_or_default();
                    if (100..200).contains(&code) {
                        if code == 101 {
                            return Err(Error::Framing("101 Switching Protocols, unasked"));
                        }
                        // Interim (100 Continue, 103 Early Hints): the
                        // final answer follows.
                        self.buf.advance(len);
                        continue;
                    }
                    break (len, Parsed::of(&resp, &self.buf)?);
                }
                Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD => {
                    return Err(Error::HeadTooLarge)
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
                Err(e) => return Err(Error::Head(e)),
            }
        };
        let head = self.buf.split_to(len).freeze();
        // Room for the headers the gateway adds to the answer (rate-limit
        // state, request id, cache status), so the map does not grow.
        let mut headers = HeaderMap::with_capacity(parsed.fields.len() + ADDED_HEADERS);
        for (name, value) in &parsed.fields {
            let name = HeaderName::from_bytes(&head[name.clone()])
                .map_err(|_| Error::Framing("invalid header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value.clone()))
                .map_err(|_| Error::Framing("invalid header value"))?;
            headers.append(name, value);
        }
        let no_body = head_request
            || parsed.status == StatusCode::NO_CONTENT
            || parsed.status == StatusCode::NOT_MODIFIED;
        let framing = match (no_body, parsed.chunked, parsed.length) {
            (true, _, _) | (false, false, Some(0)) => Framing::Done,
            (false, true, _) => Framing::Chunked(Chunk::Size, 0),
            (false, false, Some(n)) => Framing::Length(n),
            (false, false, None) => Framing::Close,
        };
        let keep_alive = parsed.keep_alive && !matches!(framing, Framing::Close);
        let mut resp = Response::new(());
        *resp.status_mut() = parsed.status;
        *resp.version_mut() = parsed.version;
        *resp.headers_mut() = headers;
        Ok(Some((resp, framing, keep_alive)))
    }
}

/// What a response head says, with its fields as ranges of the buffer.
struct Parsed {
    status: StatusCode,
    version: Version,
    fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
    /// `Transfer-Encoding: chunked`.
    chunked: bool,
    /// `Content-Length`.
    length: Option<u64>,
    /// HTTP/1.1 without `Connection: close`.
    keep_alive: bool,
}

impl Parsed {
    fn of(resp: &httparse::Response<'_, '_>, buf: &[u8]) -> Result<Parsed, Error> {
        let status = resp
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or(Error::Framing("invalid status code"))?;
        let version = match resp.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // Where a slice of `buf` starts in it (httparse's slices all are).
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + part.len()
        };
        let mut parsed = Parsed {
            status,
            version,
            fields: Vec::with_capacity(resp.headers.len()),
            chunked: false,
            length: None,
            keep_alive: version == Version::HTTP_11,
        };
        let mut transfer_encodings = 0;
        for field in resp.headers.iter() {
            let name = field.name.as_bytes();
            let value = field.value;
            if name.eq_ignore_ascii_case(b"content-length") {
                let n = content_length(value)?;
                if parsed.length.is_some_and(|m| m != n) {
                    return Err(Error::Framing("differing Content-Length fields"));
                }
                parsed.length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encodings += 1;
                if transfer_encodings > 1 || !trim(value).eq_ignore_ascii_case(b"chunked") {
                    return Err(Error::Framing("a transfer coding other than chunked"));
                }
                parsed.chunked = true;
            } else if name.eq_ignore_ascii_case(b"connection")
                && value
                    .split(|&b| b == b',')
                    .any(|token| trim(token).eq_ignore_ascii_case(b"close"))
            {
                parsed.keep_alive = false;
            }
            parsed.fields.push((at(name), at(value)));
        }
        if parsed.chunked && parsed.length.is_some() {
            return Err(Error::Framing("both Transfer-Encoding and Content-Length"));
        }
        if parsed.chunked && version != Version::HTTP_11 {
            return Err(Error::Framing("Transfer-Encoding in an HTTP/1.0 answer"));
        }
        Ok(parsed)
    }
}

/// A `Content-Length` value: decimal digits only, without overflow.
fn content_length(value: &[u8]) -> Result<u64, Error> {
    let digits = trim(value);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Error::Framing("invalid Content-Length"));
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// `value` without leading and trailing spaces and tabs.
fn trim(value: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value
        .iter()
        .position(|b| !is_space(b))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_space(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// The request head: origin-form target, `host` as `Host`, then `req`'s
/// own fields (any `Host` among them is left out). Neither the target
/// ([`UpstreamRequest::new`]) nor the http header types hold a CR, LF or
/// NUL, so nothing in them can end a line early.
fn encode(req: &UpstreamRequest, host: &HeaderValue) -> Vec<u8> {
    let target = req.target();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(32 + target.len() + host.len() + fields);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in req.headers() {
        if name == HOST {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How the rest of an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked, at this point of a chunk, with this many bytes of chunk
    /// extensions read so far.
    Chunked(Chunk, usize),
    /// Everything until the upstream closes the connection.
    Close,
    /// The body has ended.
    Done,
}

impl Framing {
    /// Counts `n` bytes of a body delimited by its length as read: it is
    /// `Done` once none are left.
    fn consumed(&mut self, n: usize) {
        if let Framing::Length(left) = self {
            *left -= n as u64;
            if *left == 0 {
                *self = Framing::Done;
            }
        }
    }
}

/// A byte bound `most` (a body's length left, or none), within `room`.
fn at_most(most: u64, room: usize) -> usize {
    usize::try_from(most).map_or(room, |m| m.min(room))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of the current chunk are still to come.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// Trailer fields (checked, then ignored) until an empty line.
    Trailers,
    /// The empty line after the trailers has been read: the body ended.
    End,
}

/// An answer's body, read from its connection. The connection is handed
/// back by [`Body::reusable`] once the body has ended cleanly.
#[derive(Debug)]
pub(crate) struct Body {
    /// `None` once the body failed (the connection is closed).
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    frames: Frames,
}

/// What gathering the buffered bytes gave.
enum Step {
    /// The frame gathered is to be handed out now.
    Frame,
    /// The body has ended: what is gathered, if anything, is its last frame.
    End,
    /// More is needed from the connection.
    More,
}

impl Body {
    /// The connection, if the body has ended and it can carry another
    /// exchange: kept alive, and nothing beyond the answer arrived.
    pub(crate) fn reusable(&mut self) -> Option<Conn> {
        let clean = self.framing == Framing::Done
            && self.keep_alive
            && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if clean {
            self.conn.take()
        } else {
            None
        }
    }

    /// Gathers what the buffer holds of the body into the frame being
    /// gathered, as far as that frame can take it.
    fn decode(&mut self) -> Result<Step, Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        let buf = &mut conn.buf;
        let lead = lead(&self.framing);
        let frames = &mut self.frames;
        match &mut self.framing {
            Framing::Done => return Ok(Step::End),
            // Nothing buffered to gather (the chunked end is `Done` as
            // soon as it is read); a read straight into the frame may
            // have filled it.
            _ if buf.is_empty() => {}
            Framing::Length(left) => {
                let took = frames.take(buf, *left, lead);
                self.framing.consumed(took);
                if self.framing == Framing::Done {
                    return Ok(Step::End);
                }
            }
            Framing::Close => {
                frames.take(buf, u64::MAX, lead);
            }
            Framing::Chunked(chunk, extensions) => {
                let broken = gather_chunks(chunk, extensions, buf, frames, lead)?;
                if *chunk == Chunk::End {
                    self.framing = Framing::Done;
                    return Ok(Step::End);
                }
                if broken {
                    return Ok(Step::Frame);
                }
            }
        }
        Ok(if frames.is_ready() {
            Step::Frame
        } else {
            Step::More
        })
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.frames.discard();
        self.conn = None;
        self.framing = Framing::Done;
        Poll::Ready(Some(Err(error)))
    }
}

/// Where a body's data is gathered into frames: copied out of the
/// connection's read buffer, or, for the frames after the first of a body
/// delimited by its length or the connection's end, read straight into
/// them ([`read_more`]: 0.05 s of user time per GiB became 0.02 s).
/// Splitting the read buffer off instead copies nothing here but costs
/// more in the kernel: each read then goes into newly allocated memory,
/// and the kernel's copy of that data to the client was the largest part
/// of streaming (1 GiB, six alternating runs of each: 0.45–0.60 s of
/// system time against 0.55–0.67 s, about 15% more throughput, for 0.05 s
/// more of user time). Copied out, or read into blocks that are reused in
/// place, the memory written stays in cache.
///
/// The first frame is an allocation of its own, handed out with whatever
/// the reads so far brought, so a short answer costs what it did. Later
/// frames are gathered in blocks of [`BLOCK`] bytes, each frame until it
/// is full ([`FULL_WRITE`] with its framing, or the rest of its block), the
/// body ends, or nothing more has arrived (benches/RESULTS.md, "Streaming"):
/// - full frames are as few writes to the client as there can be, each
///   with the chunk framing the server adds ([`lead`]) one segment over
///   loopback;
/// - each frame starts `lead` bytes past the end of the one before it, so
///   a frame that starts a block has its data 2 bytes ahead of where a
///   socket page filled again from its start takes it. On AMD model 1 the
///   kernel's copy (`rep movsb`) ran at a third of its speed when the
///   destination was 1–16 bytes past the source modulo 4 KiB
///   (`benches/copy-distance.sh`), which frames cut back to back from
///   blocks and written with 8 bytes of framing each kept hitting: 0.87 s
///   of system time per GiB against nginx's 0.54;
/// - a block whose frames have all been dropped is filled again in place,
///   and every block has the one size: frames as long as whatever each
///   read brought, each in an allocation of that size, spread over a
///   dozen of mimalloc's size classes, each with pages of its own in each
///   worker (benches/RESULTS.md, "Memory").
#[derive(Debug, Default)]
struct Frames {
    /// The frame being gathered (what is written so far) and the room
    /// after it: the rest of its block, or the first frame's allocation.
    room: BytesMut,
    /// How long the frame being gathered may grow: the room's capacity for
    /// the first frame, at most [`FULL_WRITE`] less its lead for later ones.
    limit: usize,
    stage: Stage,
}

/// Where a body's frames stand.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No frame has been handed out: the next is an allocation of its own.
    #[default]
    First,
    /// A frame has just been handed out: the next has no place yet.
    Cut,
    /// The frame being gathered has its place in a block (its lead left
    /// before it).
    Placed,
}

/// The size of the blocks a body's frames after the first are gathered in.
const BLOCK: usize = 64 * 1024;

/// Room a new frame may start in after the frames before it in a block: with
/// less left, it starts a block again instead of being a short write.
const MIN_ROOM: usize = 4 * 1024;

/// The most a frame and the client framing around it ([`lead`]) are
/// written as: one segment over loopback (65,483 bytes over IPv4 and
/// 65,463 over IPv6, with TCP timestamps). With BBR congestion control, a
/// write of more than one segment cost four to five times the system time
/// of one that fits (`WRITE=65483 bash benches/copy-distance.sh 4094`:
/// 0.12 s per GiB against 0.60 s for 64 KiB; benches/RESULTS.md, "Streaming"). A full
/// frame leaves its block's last 96 bytes unused (less than [`MIN_ROOM`]):
/// over other links, whose segments are smaller, that is 0.15% more writes.
const FULL_WRITE: usize = BLOCK - 96;

/// The bytes the server frames each data frame with on its way to the
/// client, when the client's answer is chunked: `ff98\r\n` before a
/// full frame's data and `\r\n` after it. A body with a `Content-Length`
/// goes out with none.
const CHUNK_FRAMING: usize = 8;

/// How many bytes to leave unused before each frame in a block: the client
/// framing of a body framed as `framing` (see [`Frames`]).
fn lead(framing: &Framing) -> usize {
    match framing {
        Framing::Length(_) => 0,
        Framing::Chunked(..) | Framing::Close | Framing::Done => CHUNK_FRAMING,
    }
}

impl Frames {
    /// Moves up to `most` bytes from the front of `buf` into the frame
    /// being gathered, as many as it has room for: how many it took.
    /// Frames after the first leave `lead` bytes before them in a block.
    fn take(&mut self, buf: &mut BytesMut, most: u64, lead: usize) -> usize {
        let want = at_most(most, buf.len());
        if want == 0 {
            return 0;
        }
        match self.stage {
            // Everything at hand fits: the first frame's data is at most
            // what is buffered.
            Stage::First if self.room.capacity() == 0 => {
                self.room = BytesMut::with_capacity(buf.len());
                self.limit = buf.len();
            }
            Stage::First => {}
            Stage::Cut | Stage::Placed => self.place(lead),
        }
        let n = want.min(self.free());
        self.room.extend_from_slice(&buf[..n]);
        buf.advance(n);
        n
    }

    /// How many more bytes the frame being gathered can take.
    fn free(&self) -> usize {
        self.limit - self.room.len()
    }

    /// Places the frame being gathered after the first in its block,
    /// `lead` bytes past the frame before it, if it has no place yet: at
    /// least [`MIN_ROOM`] bytes free when placed.
    fn place(&mut self, lead: usize) {
        if self.stage != Stage::Placed {
            if self.room.capacity() < MIN_ROOM + lead {
                // The same block again when every frame cut from it is
                // gone; otherwise a new one of the block's size.
                self.room.reserve(BLOCK);
            }
            self.room.extend_from_slice(&[0; CHUNK_FRAMING][..lead]);
            self.room.advance(lead);
            self.limit = self.room.capacity().min(FULL_WRITE - lead);
            self.stage = Stage::Placed;
        }
    }

    /// Reads from `io` straight into the frame being gathered after the
    /// first, at most `most` bytes: how many it read (0 at the end).
    fn poll_read(
        &mut self,
        io: &mut dyn Io,
        cx: &mut Context<'_>,
        most: u64,
        lead: usize,
    ) -> Poll<std::io::Result<usize>> {
        self.place(lead);
        let most = at_most(most, self.free());
        tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut (&mut self.room).limit(most))
    }

    /// The bytes of the frame being gathered.
    fn written(&self) -> usize {
        self.room.len()
    }

    /// Whether the frame being gathered is to go out now: the first as
    /// soon as it has any data (whatever the reads so far brought: most
    /// answers are whole in it), a later one once it is full.
    fn is_ready(&self) -> bool {
        self.written() > 0 && (self.stage == Stage::First || self.free() == 0)
    }

    /// Whether the next frame's data may be read straight into it: the
    /// first frame is cut from the read buffer (it holds the head too).
    fn reads_directly(&self) -> bool {
        self.stage != Stage::First
    }

    /// The frame gathered since the last one, if it has any data. The first
    /// frame takes its allocation whole, which costs no shared count.
    fn cut(&mut self) -> Option<Bytes> {
        if self.room.is_empty() {
            return None;
        }
        let frame = match self.stage {
            Stage::Cut | Stage::Placed => self.room.split().freeze(),
            Stage::First => std::mem::take(&mut self.room).freeze(),
        };
        self.stage = Stage::Cut;
        Some(frame)
    }

    /// Drops the frame being gathered (the body failed).
    fn discard(&mut self) {
        self.room.clear();
    }
}

/// Reads more of a body framed as `framing` from `conn`: straight into
/// the frame being gathered when nothing is buffered and the body is
/// delimited by its length or the connection's end (no copy out of the
/// read buffer; a read never goes past the length), otherwise into the
/// connection's buffer.
fn read_more(
    conn: &mut Conn,
    framing: &mut Framing,
    frames: &mut Frames,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    let most = match *framing {
        Framing::Length(left) => left,
        Framing::Close => u64::MAX,
        Framing::Chunked(..) | Framing::Done => return conn.poll_fill(cx),
    };
    if !conn.buf.is_empty() || !frames.reads_directly() {
        return conn.poll_fill(cx);
    }
    let n = std::task::ready!(frames.poll_read(&mut *conn.io, cx, most, lead(framing)))?;
    framing.consumed(n);
    Poll::Ready(Ok(n))
}

/// Gathers the data of the chunks buffered in `buf` into the frame being
/// gathered, from where `chunk` says the framing stands, consuming the
/// framing between them, until `buf` or the frame's room runs out. Reads
/// on past framing that is buffered already, so the connection is free as
/// soon as the last data is handed out. An error in that framing after
/// some data was gathered leaves that data to be handed out first
/// (`Ok(true)`: the frame is to go out now); the error is met again on the
/// next call.
fn gather_chunks(
    chunk: &mut Chunk,
    extensions: &mut usize,
    buf: &mut BytesMut,
    frames: &mut Frames,
    lead: usize,
) -> Result<bool, Error> {
    loop {
        if let Err(e) = skip_framing(chunk, extensions, buf) {
            return if frames.written() > 0 {
                Ok(true)
            } else {
                Err(e)
            };
        }
        let Chunk::Data(left) = chunk else {
            return Ok(false);
        };
        let took = frames.take(buf, *left, lead);
        if took == 0 {
            return Ok(false);
        }
        *left -= took as u64;
        if *left == 0 {
            *chunk = Chunk::DataEnd;
        }
    }
}

/// Consumes chunked framing (size lines, CRLFs, trailers) from `buf` up to
/// the next data or the end of what is buffered; the body's end leaves
/// [`Chunk::End`]. `extensions` counts the body's chunk-extension bytes,
/// which may total [`MAX_EXTENSIONS`] (as hyper allows).
fn skip_framing(
    chunk: &mut Chunk,
    extensions: &mut usize,
    buf: &mut BytesMut,
) -> Result<(), Error> {
    loop {
        match *chunk {
            Chunk::Data(_) => return Ok(()),
            Chunk::Size => match chunk_size_line(buf)? {
                Some((used, size, extension)) => {
                    *extensions += extension;
                    if *extensions >= MAX_EXTENSIONS {
                        return Err(Error::Chunked("chunk extensions too long"));
                    }
                    buf.advance(used);
                    *chunk = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                None => return Ok(()),
            },
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    if buf.first().is_some_and(|&b| b != b'\r') {
                        return Err(Error::Chunked("no CRLF after chunk data"));
                    }
                    return Ok(());
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Chunked("no CRLF after chunk data"));
                }
                buf.advance(2);
                *chunk = Chunk::Size;
            }
            Chunk::End => return Ok(()),
            Chunk::Trailers => {
                // Taken whole once it is all buffered, so its fields are
                // checked as the head's are: the answer ends where hyper,
                // or any strict reader, would end it, or not at all.
                let Some(len) = trailer_section(buf) else {
                    if buf.len() > MAX_TRAILERS {
                        return Err(Error::Chunked("trailers too long"));
                    }
                    return Ok(());
                };
                if len > MAX_TRAILERS {
                    return Err(Error::Chunked("trailers too long"));
                }
                // Usually the empty line alone: nothing to check.
                if len > 2 {
                    check_trailers(&buf[..len])?;
                }
                buf.advance(len);
                *chunk = Chunk::End;
            }
        }
    }
}

/// A trailer section (its fields and the empty line ending it), checked as
/// header fields are.
fn check_trailers(section: &[u8]) -> Result<(), Error> {
    // Lines end in CRLF only (httparse also ends them at LF).
    let crlf_only = section
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && section[i - 1] == b'\r'));
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((used, _))) if crlf_only && used == section.len() => Ok(()),
        _ => Err(Error::Chunked("invalid trailer fields")),
    }
}

/// The chunk-size line at the start of `buf`, as [`size_line`] reads it,
/// looking no further than [`MAX_CHUNK_LINE`] bytes: a longer line is
/// refused the same whether it arrived whole or in pieces.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(usize, u64, usize)>, Error> {
    match size_line(&buf[..buf.len().min(MAX_CHUNK_LINE)])? {
        None if buf.len() > MAX_CHUNK_LINE => Err(Error::Chunked("chunk-size line too long")),
        line => Ok(line),
    }
}

/// The chunk-size line at the start of `buf`: its length, the size and
/// the bytes of its extensions after their `;`, or `None` while it is
/// incomplete. At least one hex digit, then optional spaces and tabs, then
/// optional extensions (`;`, then visible characters, spaces and tabs;
/// otherwise ignored), then CRLF. httparse's reader is
/// laxer: it takes a line without digits as size 0, and any byte but CR in
/// an extension, a bare LF included, where a reader that ends lines at LF
/// would see the line end.
fn size_line(buf: &[u8]) -> Result<Option<(usize, u64, usize)>, Error> {
    let invalid = || Error::Chunked("invalid chunk size");
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return if buf.is_empty() {
            Ok(None)
        } else {
            Err(invalid())
        };
    }
    let mut size = 0u64;
    for &b in &buf[..digits] {
        let digit = char::from(b).to_digit(16).map_or(0, u64::from);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(digit))
            .ok_or(Error::Chunked("chunk size too large"))?;
    }
    let rest = &buf[digits..];
    // Where the extensions begin (their first `;`), once they have; what
    // follows it on the line counts towards MAX_EXTENSIONS.
    let mut extension = None;
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'\r' => {
                let extension = extension.map_or(0, |from| i - from - 1);
                return match rest.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((digits + i + 2, size, extension))),
                    Some(_) => Err(invalid()),
                };
            }
            b' ' | b'\t' => {}
            b';' => {
                extension.get_or_insert(i);
            }
            b'!'..=b'~' | 0x80..=0xff if extension.is_some() => {}
            _ => return Err(invalid()),
        }
    }
    Ok(None)
}

/// The length of the trailer section at the start of `buf` (its fields
/// and the empty line ending it), once that empty line is buffered.
fn trailer_section(buf: &[u8]) -> Option<usize> {
    if buf.starts_with(b"\r\n") {
        return Some(2);
    }
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let out = |data: Bytes| Poll::Ready(Some(Ok(Frame::data(data))));
        loop {
            match this.decode() {
                Ok(Step::Frame) => {
                    if let Some(data) = this.frames.cut() {
                        return out(data);
                    }
                }
                Ok(Step::End) => return this.frames.cut().map_or(Poll::Ready(None), out),
                Ok(Step::More) => {}
                Err(e) => return this.fail(e),
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match read_more(conn, &mut this.framing, &mut this.frames, cx) {
                // Nothing more for now: what is gathered goes out.
                Poll::Pending => return this.frames.cut().map_or(Poll::Pending, out),
                Poll::Ready(Ok(0)) if this.framing == Framing::Close => {
                    this.framing = Framing::Done;
                    this.conn = None;
                    return this.frames.cut().map_or(Poll::Ready(None), out);
                }
                Poll::Ready(Ok(0)) => return this.fail(Error::Closed),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked(..) | Framing::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use proptest::prelude::*;

    use super::*;

    fn conn(segments: &[&[u8]]) -> (Conn, Arc<Mutex<Vec<u8>>>) {
        let (script, written) =
            crate::fuzz::Script::new(segments.iter().map(|s| s.to_vec()).collect());
        (Conn::new(script), written)
    }

    fn get() -> UpstreamRequest {
        UpstreamRequest::get("/Chime/Report/x?queueId=1")
    }

    fn host() -> HeaderValue {
        HeaderValue::from_static("chime.example")
    }

    /// The answer to a GET arriving in `segments`: its response (body
    /// read to the end) and whether the connection could be reused.
    async fn exchange(segments: &[&[u8]]) -> Result<(Response<Bytes>, bool), Error> {
        exchange_as(Method::GET, segments).await
    }

    async fn exchange_as(
        method: Method,
        segments: &[&[u8]],
    ) -> Result<(Response<Bytes>, bool), Error> {
        let (conn, _) = conn(segments);
        let (resp, reusable) = crate::fuzz::read_with_ours(&method, conn).await?;
        Ok((resp, reusable.is_some()))
    }

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n\
        5;ext=\"x\"\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n";

    #[tokio::test]
    async fn the_request_is_written_in_origin_form_with_the_pool_host() {
        let mut req = UpstreamRequest::new(Method::HEAD, "/Chime/x?a=1&b=2".into(), 4).unwrap();
        req.push(HOST, HeaderValue::from_static("evil.example"));
        req.push(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer k"),
        );
        let many = HeaderName::from_static("x-many");
        req.push(many.clone(), HeaderValue::from_static("1"));
        req.push(many, HeaderValue::from_static("2"));
        let (conn, written) = conn(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"]);
        conn.send(&req, &host()).await.unwrap();
        assert_eq!(
            String::from_utf8(written.lock().unwrap().clone()).unwrap(),
            "HEAD /Chime/x?a=1&b=2 HTTP/1.1\r\nhost: chime.example\r\n\
             authorization: Bearer k\r\nx-many: 1\r\nx-many: 2\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_length_body_split_anywhere_is_read_whole_and_the_connection_kept() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nETag: \"e\"\r\n\r\nhello world";
        for at in 1..answer.len() {
            let (resp, reusable) = exchange(&[&answer[..at], &answer[at..]]).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["etag"], "\"e\"");
            assert_eq!(resp.body(), "hello world", "split at {at}");
            assert!(reusable, "split at {at}");
        }
    }

    #[tokio::test]
    async fn a_chunked_body_split_anywhere_is_decoded_and_the_connection_kept() {
        for at in 1..CHUNKED.len() {
            let (resp, reusable) = exchange(&[&CHUNKED[..at], &CHUNKED[at..]]).await.unwrap();
            assert_eq!(resp.body(), "hello, world!!!", "split at {at}");
            assert_eq!(resp.headers()["x-a"], "b");
            assert!(reusable, "split at {at}");
        }
    }

    proptest! {
        #[test]
        fn a_chunked_body_in_any_pieces_is_decoded(cuts in proptest::collection::vec(1..CHUNKED.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.dedup();
            let mut segments = Vec::new();
            let mut from = 0;
            for at in cuts.into_iter().chain([CHUNKED.len()]) {
                segments.push(&CHUNKED[from..at]);
                from = at;
            }
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (resp, reusable) = runtime.block_on(exchange(&segments)).unwrap();
            prop_assert_eq!(resp.body(), "hello, world!!!");
            prop_assert!(reusable);
        }
    }

    #[tokio::test]
    async fn the_connection_is_free_as_soon_as_the_last_data_is_read() {
        for (answer, whole) in [
            (CHUNKED, "hello, world!!!"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".as_slice(),
                "ok",
            ),
        ] {
            let (conn, _) = conn(&[answer]);
            let mut body = conn.send(&get(), &host()).await.unwrap().into_body();
            // Both of CHUNKED's chunks in one frame: they were read together.
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(first, whole);
            assert!(http_body::Body::is_end_stream(&body));
            assert!(body.reusable().is_some());
        }
    }

    #[tokio::test]
    async fn the_first_frame_goes_out_without_waiting_for_another_read() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
        let (conn, _) = conn(&[head, b"5\r\nworld\r\n0\r\n\r\n"]);
        let mut body = conn.send(&get(), &host()).await.unwrap().into_body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames, ["hello", "world"]);
    }

    /// The data frames of a chunked answer whose body is `chunks` (each
    /// chunk's data), all arriving in one read.
    async fn frames_of(chunks: &[Vec<u8>], tail: &[u8]) -> Vec<Result<Bytes, Error>> {
        let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for c in chunks {
            answer.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            answer.extend_from_slice(c);
            answer.extend_from_slice(b"\r\n");
        }
        answer.extend_from_slice(tail);
        let (conn, _) = conn(&[&answer]);
        let mut body = conn.send(&get(), &host()).await.unwrap().into_body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.map(|f| f.into_data().unwrap()));
        }
        frames
    }

    #[test]
    fn frames_after_the_first_fill_blocks_each_a_lead_past_the_one_before() {
        let end = |frame: &Bytes| frame.as_ptr().wrapping_add(frame.len());
        let lead = CHUNK_FRAMING;
        let mut frames = Frames::default();
        let mut gather = |data: &[u8], most: u64| {
            let mut buf = BytesMut::from(data);
            let took = frames.take(&mut buf, most, lead);
            assert_eq!(buf.len(), data.len() - took, "what is left stays buffered");
            (took, frames.is_ready(), frames.cut())
        };
        let (_, _, first) = gather(b"abc", u64::MAX);
        let first = first.unwrap();
        assert_eq!(first, "abc");
        // Frames in a block, each `lead` bytes past the end of the one
        // before (as far on as the client's framing puts it).
        let (_, _, a) = gather(&[1; 1000], u64::MAX);
        let (took, _, b) = gather(&[2; 2000], 1000);
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(took, 1000, "no more than asked");
        let start = a.as_ptr().wrapping_sub(lead);
        let block = start..start.wrapping_add(BLOCK);
        assert!(
            !block.contains(&first.as_ptr()),
            "the first frame is on its own"
        );
        assert_eq!(b.as_ptr(), end(&a).wrapping_add(lead));
        // A frame takes as much as its block has room for.
        let (took, full, rest) = gather(&vec![3; BLOCK], u64::MAX);
        let rest = rest.unwrap();
        assert!(full && took < BLOCK);
        assert_eq!(end(&rest), block.end, "the block is full");
        drop((a, b, rest));
        // Every frame of the block is gone: it is filled again in place.
        let (_, _, again) = gather(&[4; 100], u64::MAX);
        let again = again.unwrap();
        assert_eq!(again.as_ptr(), start.wrapping_add(lead));
        // With less than MIN_ROOM left after the lead, a frame starts a
        // block again; this one is still held, so another.
        let leave = MIN_ROOM + lead - 1;
        let (_, _, held) = gather(&vec![5; BLOCK - 2 * lead - 100 - leave], u64::MAX);
        let held = held.unwrap();
        assert_eq!(end(&held), block.end.wrapping_sub(leave));
        let (_, _, next) = gather(&[6; 10], u64::MAX);
        let next = next.unwrap();
        assert!(
            !block.contains(&next.as_ptr()),
            "a block in use is not written over"
        );
        assert!(again.iter().all(|&x| x == 4) && held.iter().all(|&x| x == 5));
        assert_eq!(next, [6; 10][..]);
        // A body going out with a Content-Length has its frames back to back.
        let mut frames = Frames::default();
        let mut cut = |data: &[u8]| {
            frames.take(&mut BytesMut::from(data), u64::MAX, 0);
            frames.cut().unwrap()
        };
        let (_, c, d) = (cut(b"x"), cut(&[7; 100]), cut(&[8; 100]));
        assert_eq!(d.as_ptr(), end(&c));
    }

    #[tokio::test]
    async fn a_read_straight_into_a_frame_keeps_its_place_while_nothing_arrives() {
        let end = |frame: &Bytes| frame.as_ptr().wrapping_add(frame.len());
        let (mut upstream, mut io) = tokio::io::duplex(BLOCK);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let lead = CHUNK_FRAMING;
        let mut frames = Frames::default();
        frames.take(&mut BytesMut::from(&b"first"[..]), u64::MAX, lead);
        frames.cut().unwrap();
        let mut read =
            |frames: &mut Frames, most| match frames.poll_read(&mut io, &mut cx, most, lead) {
                Poll::Ready(Ok(n)) => Some(n),
                Poll::Pending => None,
                Poll::Ready(Err(e)) => panic!("{e}"),
            };
        assert_eq!(read(&mut frames, 100), None);
        upstream.write_all(&[1; 300]).await.unwrap();
        assert_eq!(read(&mut frames, 100), Some(100), "no more than asked");
        let a = frames.cut().unwrap();
        assert_eq!(read(&mut frames, u64::MAX), Some(200));
        assert_eq!(read(&mut frames, u64::MAX), None);
        assert_eq!(read(&mut frames, u64::MAX), None);
        upstream.write_all(&[2; 50]).await.unwrap();
        assert_eq!(read(&mut frames, u64::MAX), Some(50));
        let b = frames.cut().unwrap();
        assert_eq!(
            b.as_ptr(),
            end(&a).wrapping_add(lead),
            "one lead, however many reads"
        );
        assert_eq!((&a[..], b.len()), (&[1; 100][..], 250));
    }

    #[tokio::test]
    async fn the_read_buffer_stays_at_read_size_while_bytes_are_left_unread() {
        // 1,000-byte chunks, each read ending two or four bytes into a
        // chunk's size line, which is left unread until the next read.
        let chunks: Vec<Vec<u8>> = (0..300u16).map(|i| vec![(i % 251) as u8; 1000]).collect();
        let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut cuts = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            cuts.push(answer.len() + 2 + 2 * (i % 2));
            answer.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            answer.extend_from_slice(c);
            answer.extend_from_slice(b"\r\n");
        }
        answer.extend_from_slice(b"0\r\n\r\n");
        cuts.push(answer.len());
        let segments: Vec<&[u8]> = std::iter::once(0)
            .chain(cuts.iter().copied())
            .zip(cuts.iter().copied())
            .map(|(from, to)| &answer[from..to])
            .collect();
        let (conn, _) = conn(&segments);
        let mut body = conn.send(&get(), &host()).await.unwrap().into_body();
        let mut data = Vec::new();
        let mut largest = 0;
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
            largest = largest.max(body.conn.as_ref().map_or(0, |c| c.buf.capacity()));
        }
        assert_eq!(data, chunks.concat());
        assert!(
            largest <= READ_SIZE,
            "the read buffer grew to {largest} bytes"
        );
    }

    #[tokio::test]
    async fn frames_after_the_first_go_out_as_full_blocks_while_data_keeps_coming() {
        // 200 chunks of 1,500 bytes, more than one read: the first frame is
        // what the first read brought, then full blocks, then the rest.
        let small: Vec<Vec<u8>> = (0..200u8).map(|i| vec![i; 1500]).collect();
        let frames = frames_of(&small, b"0\r\n\r\n").await;
        let frames: Vec<Bytes> = frames.into_iter().map(Result::unwrap).collect();
        let lens: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert!(lens.len() == 5 && lens[0] < READ_SIZE, "{lens:?}");
        assert_eq!(lens[1..4], [FULL_WRITE - CHUNK_FRAMING; 3]);
        assert_eq!(frames.concat(), small.concat());
        // Chunks read together go out together.
        let two = vec![vec![b'a'; 20_000], vec![b'b'; 20_000]];
        let frames = frames_of(&two, b"0\r\n\r\n").await;
        assert_eq!(frames.len(), 1, "{}", frames.len());
    }

    #[tokio::test]
    async fn a_body_with_a_length_is_read_straight_into_its_frames_never_past_its_end() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len());
        // The body's end arrives together with bytes nobody asked for.
        let mut rest = data[1000..].to_vec();
        rest.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let first = [head.as_bytes(), &data[..1000]].concat();
        let (script, _) = crate::fuzz::Script::new(vec![first, rest]);
        let delivered = script.delivered();
        let mut body = Conn::new(script)
            .send(&get(), &host())
            .await
            .unwrap()
            .into_body();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames.concat(), data);
        let lens: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert_eq!(
            lens,
            [
                1000,
                FULL_WRITE,
                FULL_WRITE,
                FULL_WRITE,
                FULL_WRITE,
                299_000 - 4 * FULL_WRITE
            ]
        );
        // Each read was bounded by what was left of the body, so the read
        // buffer stayed empty and the bytes beyond were not read: the
        // connection is handed back and its check sees them.
        assert_eq!(
            delivered.load(std::sync::atomic::Ordering::Relaxed),
            head.len() + data.len()
        );
        let mut conn = body.reusable().expect("the body ended cleanly");
        assert!(!conn.is_open(), "unasked bytes are waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_gathered_goes_out_when_nothing_more_has_arrived() {
        for (head, framing, chunked) in [
            ("Transfer-Encoding: chunked", CHUNK_FRAMING, true),
            ("Content-Length: 100006", 0, false),
        ] {
            let (near, mut far) = tokio::io::duplex(1 << 20);
            let part = |n: usize, b: u8| {
                let data = vec![b; n];
                if chunked {
                    [format!("{n:x}\r\n").into_bytes(), data, b"\r\n".to_vec()].concat()
                } else {
                    data
                }
            };
            let answer = [
                format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n").into_bytes(),
                part(5, b'f'),
            ];
            far.write_all(&answer.concat()).await.unwrap();
            let conn = Conn::new(near);
            let mut body = conn.send(&get(), &host()).await.unwrap().into_body();
            // Held back, a frame would never come (the clock is paused: a
            // wait that nothing else can end times out at once).
            let mut next = async || {
                let frame = tokio::time::timeout(Duration::from_secs(5), body.frame());
                let frame = frame.await.expect("a frame, not a wait for more");
                frame.unwrap().unwrap().into_data().unwrap()
            };
            assert_eq!(next().await, "fffff");
            // 100,000 bytes at once: a full block, then the rest as soon as
            // no more has arrived.
            far.write_all(&[part(60_000, b'x'), part(40_000, b'y')].concat())
                .await
                .unwrap();
            let full = next().await;
            assert_eq!(full.len(), FULL_WRITE - framing, "{head}");
            let rest = next().await;
            assert_eq!(
                [full, rest].concat(),
                [[b'x'; 60_000].as_slice(), &[b'y'; 40_000]].concat()
            );
            // Then what trickles in goes out as it comes.
            far.write_all(&part(1, b'z')).await.unwrap();
            assert_eq!(next().await, "z");
            if chunked {
                far.write_all(b"0\r\n\r\n").await.unwrap();
            }
            assert!(body.frame().await.is_none());
            assert!(body.reusable().is_some(), "{head}");
        }
    }

    #[tokio::test]
    async fn data_before_broken_framing_is_handed_out_before_the_error() {
        let frames = frames_of(&[b"hello".to_vec(), b"world".to_vec()], b"zz\r\n").await;
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert_eq!(frames[0].as_ref().unwrap(), "helloworld");
        assert!(matches!(frames[1], Err(Error::Chunked(_))), "{frames:?}");
    }

    #[tokio::test]
    async fn answers_without_a_body_end_at_their_head() {
        let with_length = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        let (resp, reusable) = exchange_as(Method::HEAD, &[with_length]).await.unwrap();
        assert_eq!(resp.headers()["content-length"], "100");
        assert!(resp.body().is_empty() && reusable);
        for status in ["204 No Content", "304 Not Modified"] {
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n");
            let (resp, reusable) = exchange(&[answer.as_bytes()]).await.unwrap();
            assert!(resp.body().is_empty() && reusable, "{status}");
        }
        let (resp, reusable) = exchange(&[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
            .await
            .unwrap();
        assert!(resp.body().is_empty() && reusable);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let (resp, reusable) = exchange(&[
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        ])
        .await
        .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(!resp.headers().contains_key("link"));
        assert_eq!(resp.body(), "no");
        assert!(reusable);
    }

    #[tokio::test]
    async fn a_body_to_the_end_of_the_connection_is_read_and_the_connection_closed() {
        let (resp, reusable) = exchange(&[b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"])
            .await
            .unwrap();
        assert_eq!(resp.body(), "all of it");
        assert!(!reusable);
    }

    #[tokio::test]
    async fn connections_that_may_not_carry_another_answer_are_not_kept() {
        for answer in [
            // Said so.
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\nok"
                .as_slice(),
            // HTTP/1.0.
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            // More arrived than the answer: whatever it is, it must never
            // be read as the next request's answer.
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nX",
        ] {
            let (resp, reusable) = exchange(&[answer]).await.unwrap();
            assert_eq!(resp.body(), "ok");
            assert!(!reusable, "{}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn ambiguous_or_unknown_framing_is_refused() {
        for (head, why) in [
            ("Transfer-Encoding: chunked\r\nContent-Length: 5", "both"),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked", "both"),
            ("Transfer-Encoding: gzip, chunked", "chunked"),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                "chunked",
            ),
            ("Content-Length: 5\r\nContent-Length: 6", "differing"),
            ("Content-Length: +5", "invalid Content-Length"),
            ("Content-Length: 5, 5", "invalid Content-Length"),
            (
                "Content-Length: 99999999999999999999",
                "invalid Content-Length",
            ),
            ("Content-Length: ", "invalid Content-Length"),
        ] {
            let answer = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\nhello");
            let err = exchange(&[answer.as_bytes()]).await.unwrap_err();
            assert!(matches!(err, Error::Framing(_)), "{head}: {err}");
            assert!(err.to_string().contains(why), "{head}: {err}");
        }
        let err = exchange(&[b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("HTTP/1.0"), "{err}");
        let err = exchange(&[b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Framing(_)), "{err}");
        // Equal lengths said twice are one length.
        let (resp, _) =
            exchange(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"])
                .await
                .unwrap();
        assert_eq!(resp.body(), "ok");
    }

    #[tokio::test]
    async fn malformed_heads_are_refused() {
        let err = exchange(&[b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n"])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Head(_)), "{err}");
        let err = exchange(&[b"HTTP/2 200 OK\r\n\r\n"]).await.unwrap_err();
        assert!(matches!(err, Error::Head(_)), "{err}");
        let long = format!("HTTP/1.1 200 OK\r\nX-Long: {}\r\n", "a".repeat(MAX_HEAD));
        let err = exchange(&[long.as_bytes()]).await.unwrap_err();
        assert!(matches!(err, Error::HeadTooLarge), "{err}");
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        let err = exchange(&[many.as_bytes()]).await.unwrap_err();
        assert!(matches!(err, Error::HeadTooLarge), "{err}");
        let err = exchange(&[b"HTTP/1.1 200 OK\r\nContent-Le"])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
    }

    #[tokio::test]
    async fn malformed_or_cut_bodies_fail_and_close_the_connection() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (body, why) in [
            ("zz\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            ("5\r\nhelloXX0\r\n\r\n", "no CRLF"),
            ("ffffffffffffffffff\r\n", "chunk size too large"),
            // No digits: httparse's reader took these as the last chunk.
            ("\r\n\r\n", "invalid chunk size"),
            (";x\r\n\r\n", "invalid chunk size"),
            // A bare LF or a control character in an extension.
            ("5;a\nb\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            ("5;a\0\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            ("5 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            ("5\rX\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            // Trailer fields are checked as header fields are.
            ("0\r\nX-T\x01: 1\r\n\r\n", "invalid trailer fields"),
            ("0\r\nnot a field\r\n\r\n", "invalid trailer fields"),
            ("0\r\nX: a\nY: b\r\n\r\n", "invalid trailer fields"),
            ("5\r\nhel", "closed"),
            ("5\r\nhello\r\n", "closed"),
            ("0\r\nX-T: 1\r\n", "closed"),
        ] {
            let answer = format!("{head}{body}");
            let err = exchange(&[answer.as_bytes()]).await.unwrap_err();
            assert!(err.to_string().contains(why), "{body:?}: {err}");
        }
        let long_line = format!("{head}5;{}", "e".repeat(MAX_CHUNK_LINE + 1));
        let err = exchange(&[long_line.as_bytes()]).await.unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
        // A whole line of `len` bytes with its CRLF, in one read: the same
        // limit as for a line arriving in pieces.
        let line = |len: usize| format!("{head}1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(len - 4));
        let (read, _) = exchange(&[line(MAX_CHUNK_LINE).as_bytes()]).await.unwrap();
        assert_eq!(read.body(), "x");
        let err = exchange(&[line(MAX_CHUNK_LINE + 1).as_bytes()])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("chunk-size line too long"),
            "{err}"
        );
        let long_trailers = format!("{head}0\r\n{}", "X-T: 1\r\n".repeat(MAX_TRAILERS / 8 + 1));
        let err = exchange(&[long_trailers.as_bytes()]).await.unwrap_err();
        assert!(err.to_string().contains("trailers too long"), "{err}");
        let err = exchange(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
        // A failed body gives its connection up.
        let (conn, _) = conn(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]);
        let mut body = conn.send(&get(), &host()).await.unwrap().into_body();
        while let Some(Ok(_)) = body.frame().await {}
        assert!(body.reusable().is_none());
    }

    /// A body with `n` chunks of one byte, each line with an extension of
    /// `each` bytes after its `;`, then `last` more such bytes in one more.
    fn extended(n: usize, each: usize, last: usize) -> Vec<u8> {
        let chunk = |len: usize| format!("1;{}\r\nx\r\n", "e".repeat(len));
        let chunks: String = (0..n).map(|_| chunk(each)).collect();
        let last = if last > 0 { chunk(last) } else { String::new() };
        format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}{last}0\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn chunk_extensions_are_limited_over_the_whole_body_as_hyper_limits_them() {
        // Just under the limit: read, and read as hyper reads it.
        let within = extended(8, MAX_EXTENSIONS / 8 - 1, 7);
        assert!(crate::fuzz::upstream_answer_in(&Method::GET, vec![within]));
        // At it: refused, each line well under MAX_CHUNK_LINE.
        let past = extended(8, MAX_EXTENSIONS / 8 - 1, 8);
        assert!(!crate::fuzz::upstream_answer_in(
            &Method::GET,
            vec![past.clone()]
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let err = rt.block_on(exchange(&[&past])).unwrap_err();
        assert!(
            err.to_string().contains("chunk extensions too long"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nothing_received_is_told_apart_from_a_cut_answer() {
        let (silent, _) = conn(&[]);
        let failed = silent.send(&get(), &host()).await.unwrap_err();
        assert!(failed.nothing_received && matches!(failed.error, Error::Closed));
        let (cut, _) = conn(&[b"HTTP/1.1 2"]);
        let failed = cut.send(&get(), &host()).await.unwrap_err();
        assert!(!failed.nothing_received);
    }
}
