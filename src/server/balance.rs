//! Client connections spread evenly over the workers.
//!
//! Every worker accepts from the one listening socket, and the kernel wakes
//! all of them for each new connection: whichever gets there first takes
//! it. When many connections arrive at once (a pool of partner or dashboard
//! connections opening, a load generator starting), one worker can take
//! most of them, and a keep-alive connection stays on its worker for its
//! whole life: that worker's core saturates while another's has room
//! (benches/RESULTS.md). So the worker that accepts a connection counts
//! it against the worker with the fewest open connections, itself when it
//! is one of those, and hands it over when it is not.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{IntGauge, IntGaugeVec};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// An accepted connection on its way to the worker that will serve it.
pub(super) struct Handoff {
    pub(super) stream: std::net::TcpStream,
    pub(super) peer: SocketAddr,
    /// Its place among `listen.max_connections`.
    pub(super) slot: OwnedSemaphorePermit,
    pub(super) open: Open,
}

/// Where each worker's connections are counted and handed over.
#[derive(Debug)]
pub(super) struct Balance {
    /// Open connections per worker (`chime_gateway_worker_connections`).
    open: Box<[IntGauge]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// What worker `i` receives the connections handed to it through.
pub(super) type Inbox = mpsc::UnboundedReceiver<Handoff>;

impl Balance {
    /// A balance over `workers` workers, each counted in `gauges` under
    /// its number, and each one's inbox.
    pub(super) fn new(gauges: &IntGaugeVec, workers: usize) -> (Arc<Balance>, Vec<Inbox>) {
        let (senders, inboxes): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Balance {
            open: (0..workers)
                .map(|i| gauges.with_label_values(&[&i.to_string()]))
                .collect(),
            inboxes: senders.into_boxed_slice(),
        };
        (Arc::new(balance), inboxes)
    }

    /// The worker that is to serve a connection worker `me` has just
    /// accepted: the one with the fewest open connections, `me` among
    /// equals. The connection counts as open there until `Open` is dropped.
    pub(super) fn place(self: &Arc<Self>, me: usize) -> (usize, Open) {
        let mut to = me;
        let mut least = self.open[me].get();
        for (i, open) in self.open.iter().enumerate() {
            if open.get() < least {
                (to, least) = (i, open.get());
            }
        }
        self.open[to].inc();
        let open = Open {
            balance: Arc::clone(self),
            worker: to,
        };
        (to, open)
    }

    /// Sends `handoff` to worker `to`; gives it back if that worker has
    /// stopped.
    pub(super) fn hand_over(&self, to: usize, handoff: Handoff) -> Result<(), Handoff> {
        self.inboxes[to].send(handoff).map_err(|e| e.0)
    }
}

/// A connection counted as open on a worker, until dropped.
#[derive(Debug)]
pub(super) struct Open {
    balance: Arc<Balance>,
    worker: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.balance.open[self.worker].dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balance(workers: usize) -> (Arc<Balance>, Vec<Inbox>, Vec<IntGauge>) {
        let gauges = IntGaugeVec::new(prometheus::Opts::new("open", "open"), &["worker"]).unwrap();
        let (balance, inboxes) = Balance::new(&gauges, workers);
        let each = (0..workers)
            .map(|i| gauges.with_label_values(&[&i.to_string()]))
            .collect();
        (balance, inboxes, each)
    }

    fn counts(gauges: &[IntGauge]) -> Vec<i64> {
        gauges.iter().map(IntGauge::get).collect()
    }

    #[test]
    fn connections_one_worker_accepts_are_spread_over_all() {
        let (balance, _inboxes, gauges) = balance(3);
        let mut held = Vec::new();
        let mut placed = Vec::new();
        for _ in 0..7 {
            let (to, open) = balance.place(0);
            placed.push(to);
            held.push(open);
        }
        assert_eq!(placed, vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(counts(&gauges), vec![3, 2, 2]);
    }

    #[test]
    fn a_worker_keeps_a_connection_when_none_has_fewer() {
        let (balance, _inboxes, gauges) = balance(2);
        let (_, a) = balance.place(1);
        let (_, b) = balance.place(0);
        // Equal again: each keeps what it accepts.
        assert_eq!(balance.place(1).0, 1);
        assert_eq!(
            counts(&gauges),
            vec![1, 1],
            "the placed-and-dropped one is no longer counted"
        );
        drop((a, b));
        assert_eq!(counts(&gauges), vec![0, 0]);
    }

    #[test]
    fn closing_connections_steers_new_ones_to_where_they_closed() {
        let (balance, _inboxes, gauges) = balance(2);
        let mut on_0: Vec<Open> = (0..4).map(|_| balance.place(0)).map(|(_, o)| o).collect();
        assert_eq!(counts(&gauges), vec![2, 2]);
        on_0.retain(|o| o.worker != 1);
        assert_eq!(counts(&gauges), vec![2, 0]);
        assert_eq!(balance.place(0).0, 1);
    }

    #[tokio::test]
    async fn a_handed_over_connection_arrives_in_its_workers_inbox() {
        let (balance, mut inboxes, gauges) = balance(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let slot = Arc::new(tokio::sync::Semaphore::new(1))
            .acquire_owned()
            .await
            .unwrap();
        let (_, first) = balance.place(0);
        let (to, open) = balance.place(0);
        assert_eq!(to, 1);
        let handoff = Handoff {
            stream,
            peer,
            slot,
            open,
        };
        assert!(balance.hand_over(to, handoff).is_ok());
        let got = inboxes[1].try_recv().expect("in worker 1's inbox");
        assert_eq!(got.peer, peer);
        assert!(inboxes[0].try_recv().is_err());
        drop((got, first));
        assert_eq!(counts(&gauges), vec![0, 0]);
    }
}
