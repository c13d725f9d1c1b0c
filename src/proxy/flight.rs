//! Single-flight: identical concurrent upstream requests share one exchange.
//!
//! A [`Flight`] is one upstream exchange whose answer any number of
//! [`Reader`]s receive in full: the status and headers, then every body
//! chunk in order. The [`Leader`] pushes chunks; each reader follows at its
//! own pace. The leader's work is a [`Pump`] that the leading request
//! drives itself (while it waits for the head, then from its response
//! body), so the usual case of a request nobody joins costs no extra task
//! and no cross-thread wake-up; only if the leading client goes away while
//! others still read is the pump handed to a task of its own. Chunks are dropped once every reader has
//! passed them, and the leader waits while more than [`WINDOW`] bytes are
//! unread, so memory stays bounded and the slowest client sets the pace
//! (a client that stops reading altogether is cut off by the stall
//! timeout, which releases the others). A flight can be joined only while
//! its first chunk is still held, so every reader gets the whole body; a
//! later identical request starts a new flight. When every reader has gone,
//! the leader gives up and the upstream exchange is dropped.
//!
//! [`Flights`] is the registry of joinable flights, sharded by key so no
//! single lock is shared by all requests.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use bytes::Bytes;

use super::UpstreamError;
use crate::cache::{Head, UpstreamKey};
use crate::BoxError;

/// Unread bytes a flight may hold before the leader waits for its readers.
pub const WINDOW: usize = 1 << 20;

const SHARDS: usize = 16;

/// Joinable flights by upstream key.
#[derive(Debug)]
pub struct Flights {
    shards: Vec<Mutex<HashMap<UpstreamKey, Arc<Flight>>>>,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// What [`Flights::join_or_start`] found.
#[derive(Debug)]
pub enum Joined {
    /// An identical request is in flight; this reader follows it.
    Follower(Reader),
    /// A new flight: the caller must run it with the [`Leader`].
    Leader(Leader, Reader),
}

impl Flights {
    fn shard(&self, key: &UpstreamKey) -> MutexGuard<'_, HashMap<UpstreamKey, Arc<Flight>>> {
        self.shards[usize::from(key.first_byte()) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A reader of the joinable flight for `key`, if there is one.
    pub fn join(&self, key: &UpstreamKey) -> Option<Reader> {
        self.shard(key).get(key).and_then(Flight::reader)
    }

    /// Joins the flight for `key`, or starts one; without a key starts an
    /// unshared flight (coalescing off).
    pub fn join_or_start(self: &Arc<Self>, key: Option<UpstreamKey>) -> Joined {
        let flight = Flight::new();
        if let Some(key) = &key {
            let mut shard = self.shard(key);
            if let Some(existing) = shard.get(key).and_then(Flight::reader) {
                return Joined::Follower(existing);
            }
            shard.insert(*key, Arc::clone(&flight));
        }
        // Nothing is pushed before the leader runs, so this reader starts at 0.
        let reader = flight.add_reader(&mut flight.lock());
        let leader = Leader {
            flight,
            registry: key.map(|key| (Arc::clone(self), key)),
            finished: false,
        };
        Joined::Leader(leader, reader)
    }

    fn forget(&self, key: &UpstreamKey, flight: &Arc<Flight>) {
        let mut shard = self.shard(key);
        if shard.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            shard.remove(key);
        }
    }

    /// Flights currently joinable.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// No flight is joinable.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One shared upstream exchange. Waiting is done with wakers kept in the
/// state itself: whoever changes the state under the lock wakes whoever
/// registered under the same lock, so no wake-up is lost and no other
/// synchronisation is needed.
#[derive(Debug)]
pub struct Flight {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    head: Option<Result<Arc<Head>, UpstreamError>>,
    chunks: VecDeque<Bytes>,
    /// Sequence number of `chunks[0]`.
    first: u64,
    buffered: usize,
    end: Option<End>,
    /// Reader id -> next sequence number it reads.
    readers: HashMap<u64, u64>,
    next_id: u64,
    /// Readers waiting for the head, a chunk or the end.
    waiting_readers: Vec<Waker>,
    /// The leader waiting for room or for readers to leave.
    waiting_leader: Option<Waker>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Aborted,
}

fn register(wakers: &mut Vec<Waker>, cx: &Context<'_>) {
    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
        wakers.push(cx.waker().clone());
    }
}

impl State {
    /// Drops the chunks every reader has passed.
    fn release(&mut self) {
        let end = self.first + self.chunks.len() as u64;
        let min = self.readers.values().copied().min().unwrap_or(end);
        while self.first < min {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    self.buffered -= chunk.len();
                    self.first += 1;
                }
                None => break,
            }
        }
    }
}

impl Flight {
    fn new() -> Arc<Flight> {
        Arc::new(Flight {
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new reader from the first chunk, unless chunks were already
    /// dropped or the exchange failed or ended.
    fn reader(self: &Arc<Self>) -> Option<Reader> {
        let mut s = self.lock();
        if s.first > 0 || s.end.is_some() || matches!(s.head, Some(Err(_))) {
            return None;
        }
        Some(self.add_reader(&mut s))
    }

    fn add_reader(self: &Arc<Self>, s: &mut State) -> Reader {
        let id = s.next_id;
        s.next_id += 1;
        s.readers.insert(id, s.first);
        Reader {
            flight: Arc::clone(self),
            id,
            pos: s.first,
        }
    }
}

/// Follows a flight's answer.
#[derive(Debug)]
pub struct Reader {
    flight: Arc<Flight>,
    id: u64,
    pos: u64,
}

pub(super) fn broke_off() -> BoxError {
    "the upstream answer broke off mid-stream".into()
}

impl Reader {
    /// The answer's status and headers, or why there is none; the leading
    /// request passes its `pump` to drive the exchange meanwhile.
    pub async fn head(&mut self, mut pump: Option<&mut Pump>) -> Result<Arc<Head>, UpstreamError> {
        std::future::poll_fn(|cx| {
            if let Some(pump) = pump.as_deref_mut() {
                // Ready only once the leader's work is over, by which time
                // the head (or a failure) is published.
                let _ = pump.poll(cx);
            }
            let mut s = self.flight.lock();
            match &s.head {
                Some(head) => Poll::Ready(head.clone()),
                None => {
                    register(&mut s.waiting_readers, cx);
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next chunk, the end (`None`), or registers to be woken.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let mut s = self.flight.lock();
        let end = s.first + s.chunks.len() as u64;
        if self.pos < end {
            let chunk = s.chunks[(self.pos - s.first) as usize].clone();
            self.pos += 1;
            s.readers.insert(self.id, self.pos);
            s.release();
            let leader = s.waiting_leader.take();
            drop(s);
            if let Some(leader) = leader {
                leader.wake();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match s.end {
            Some(End::Complete) => Poll::Ready(None),
            Some(End::Aborted) => Poll::Ready(Some(Err(broke_off()))),
            None => {
                register(&mut s.waiting_readers, cx);
                Poll::Pending
            }
        }
    }

    /// The next body chunk; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, BoxError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// This reader as a response body of `length` bytes, if known; the
    /// leading request's body also drives the `pump`.
    pub fn into_body(self, length: Option<u64>, pump: Option<Pump>) -> crate::body::Body {
        crate::body::stream(FlightBody {
            reader: self,
            remaining: length,
            pump: pump.filter(|p| !p.is_done()),
        })
    }
}

/// The leader's work (the exchange and the body), driven by the leading
/// request. Dropped unfinished while readers remain, it moves to a task of
/// its own so they are still served.
pub struct Pump {
    run: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    flight: Arc<Flight>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("done", &self.is_done())
            .finish()
    }
}

impl Pump {
    fn is_done(&self) -> bool {
        self.run.is_none()
    }

    /// Makes progress; ready once the leader's work is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(run) = self.run.as_mut() {
            ready!(run.as_mut().poll(cx));
            self.run = None;
        }
        Poll::Ready(())
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        let readers = !self.flight.lock().readers.is_empty();
        if readers {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(run);
            }
        }
    }
}

/// A reader as an [`http_body::Body`]. Knowing the length lets the server
/// see the end as soon as the last byte is out, as with a direct upstream
/// body, instead of waiting for the leader to say so.
struct FlightBody {
    reader: Reader,
    remaining: Option<u64>,
    pump: Option<Pump>,
}

impl http_body::Body for FlightBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(pump) = this.pump.as_mut() {
            if pump.poll(cx).is_ready() {
                this.pump = None;
            }
        }
        let chunk = ready!(this.reader.poll_next(cx));
        if let (Some(Ok(chunk)), Some(left)) = (&chunk, this.remaining.as_mut()) {
            *left = left.saturating_sub(chunk.len() as u64);
        }
        Poll::Ready(chunk.map(|c| c.map(http_body::Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0) && self.pump.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.remaining {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let mut s = self.flight.lock();
        s.readers.remove(&self.id);
        s.release();
        let leader = s.waiting_leader.take();
        drop(s);
        if let Some(leader) = leader {
            leader.wake();
        }
    }
}

/// Runs a flight: publishes the head and the body. Dropped unfinished (the
/// task failed or was cancelled), it ends the flight as failed, so readers
/// never wait on an exchange nobody runs.
#[derive(Debug)]
pub struct Leader {
    flight: Arc<Flight>,
    registry: Option<(Arc<Flights>, UpstreamKey)>,
    finished: bool,
}

impl Leader {
    /// Hands the leader to `run` (the exchange and the body), to be driven
    /// by the leading request.
    pub fn into_pump<F>(self, run: impl FnOnce(Leader) -> F) -> Pump
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let flight = Arc::clone(&self.flight);
        Pump {
            run: Some(Box::pin(run(self))),
            flight,
        }
    }

    fn publish(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.flight.lock();
        f(&mut s);
        let waiting = std::mem::take(&mut s.waiting_readers);
        drop(s);
        for reader in waiting {
            reader.wake();
        }
    }

    /// Ready with `ready(state)`'s answer, or registers the leader to be
    /// woken by the next reader that consumes or leaves.
    fn wait_for<T>(&self, cx: &Context<'_>, ready: impl Fn(&State) -> Option<T>) -> Poll<T> {
        let mut s = self.flight.lock();
        match ready(&s) {
            Some(out) => Poll::Ready(out),
            None => {
                s.waiting_leader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Resolves once no reader is left (every client went away).
    pub async fn abandoned(&self) {
        std::future::poll_fn(|cx| self.wait_for(cx, |s| s.readers.is_empty().then_some(()))).await
    }

    /// Waits until readers have caught up to within [`WINDOW`]; `false`
    /// when no reader is left.
    pub async fn room(&self) -> bool {
        std::future::poll_fn(|cx| {
            self.wait_for(cx, |s| {
                if s.readers.is_empty() {
                    Some(false)
                } else {
                    (s.buffered < WINDOW).then_some(true)
                }
            })
        })
        .await
    }

    /// The exchange failed before an answer: every reader gets `err`.
    pub fn fail(mut self, err: UpstreamError) {
        self.publish(|s| s.head = Some(Err(err)));
        self.finish();
    }

    /// The answer's status and headers.
    pub fn head(&self, head: Arc<Head>) {
        self.publish(|s| s.head = Some(Ok(head)));
    }

    /// One body chunk.
    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.publish(|s| {
            s.buffered += chunk.len();
            s.chunks.push_back(chunk);
        });
    }

    /// The body ended cleanly.
    pub fn complete(mut self) {
        self.publish(|s| s.end = Some(End::Complete));
        self.finish();
    }

    fn finish(&mut self) {
        self.finished = true;
        if let Some((flights, key)) = self.registry.take() {
            flights.forget(&key, &self.flight);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.publish(|s| {
            if s.head.is_none() {
                s.head = Some(Err(UpstreamError::Failed));
            }
            s.end = Some(End::Aborted);
        });
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    fn key(n: u8) -> UpstreamKey {
        UpstreamKey::of(&crate::proxy::UpstreamRequest::get(&format!("/r/{n}")))
    }

    fn ok_head() -> Arc<Head> {
        Arc::new(Head {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            request_id: None,
        })
    }

    async fn read_all(mut r: Reader) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        while let Some(chunk) = r.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn followers_get_the_whole_answer() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(leader, first) = flights.join_or_start(Some(key(1))) else {
            panic!("first request leads");
        };
        let Joined::Follower(second) = flights.join_or_start(Some(key(1))) else {
            panic!("second request follows");
        };
        assert!(matches!(
            flights.join_or_start(Some(key(2))),
            Joined::Leader(..)
        ));
        leader.head(ok_head());
        leader.push(Bytes::from_static(b"a,"));
        leader.push(Bytes::from_static(b"b\n"));
        // Joinable while the first chunk is held.
        let third = flights.join(&key(1)).unwrap();
        leader.complete();
        assert!(
            flights.join(&key(1)).is_none(),
            "ended flights are forgotten"
        );
        for r in [first, second, third] {
            assert_eq!(read_all(r).await.unwrap(), b"a,b\n");
        }
    }

    #[tokio::test]
    async fn passed_chunks_are_dropped_and_the_flight_closes_to_joiners() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(leader, mut reader) = flights.join_or_start(Some(key(3))) else {
            panic!()
        };
        leader.head(ok_head());
        leader.push(Bytes::from_static(b"x"));
        assert_eq!(reader.next().await.unwrap().unwrap(), "x");
        assert_eq!(leader.flight.lock().buffered, 0);
        assert!(
            flights.join(&key(3)).is_none(),
            "a late joiner would miss the start"
        );
        assert!(matches!(
            flights.join_or_start(Some(key(3))),
            Joined::Leader(..)
        ));
    }

    #[tokio::test]
    async fn an_abandoned_leader_fails_its_readers() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(leader, mut reader) = flights.join_or_start(Some(key(4))) else {
            panic!()
        };
        drop(leader);
        assert!(matches!(
            reader.head(None).await,
            Err(UpstreamError::Failed)
        ));
        assert!(flights.is_empty());

        let Joined::Leader(leader, mut reader) = flights.join_or_start(Some(key(4))) else {
            panic!()
        };
        leader.head(ok_head());
        leader.push(Bytes::from_static(b"partial"));
        drop(leader);
        assert!(reader.head(None).await.is_ok());
        assert_eq!(reader.next().await.unwrap().unwrap(), "partial");
        assert!(
            reader.next().await.unwrap().is_err(),
            "the end is an error, not EOF"
        );
    }

    #[tokio::test]
    async fn the_leader_waits_for_slow_readers_and_notices_when_all_leave() {
        let flights = Arc::new(Flights::default());
        let Joined::Leader(leader, mut reader) = flights.join_or_start(None) else {
            panic!()
        };
        assert!(flights.is_empty(), "unregistered flights are not joinable");
        leader.head(ok_head());
        leader.push(Bytes::from(vec![0; WINDOW]));
        let room = leader.room();
        tokio::pin!(room);
        assert!(
            futures_util::poll!(room.as_mut()).is_pending(),
            "a full window waits"
        );
        reader.next().await.unwrap().unwrap();
        assert!(room.await);
        drop(reader);
        assert!(!leader.room().await);
        leader.abandoned().await;
    }
}
