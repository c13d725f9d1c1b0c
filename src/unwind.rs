//! A request whose handling panics is answered with the JSON 500, not a
//! dropped connection, and the panic is logged without what it quoted.
//!
//! A panic is a bug (fuzzing found one in the time parser); without this
//! it unwinds through the connection's task, which tokio ends, so the
//! client's connection is cut with no answer and no audit line. Here the
//! request's future, and the synchronous part of the call that makes it,
//! run under [`std::panic::catch_unwind`]: a panic becomes [`Panicked`],
//! which the one place that maps errors to responses renders as the 500
//! `internal` refusal with the request id. The future that panicked is
//! dropped and never polled again. Once the answer streams, the observe
//! layer polls its body the same way: a panic there aborts that answer,
//! as an upstream breaking off does.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::BoxError;

/// The request's handling panicked (the panic itself is logged by the
/// hook [`log_panics`] installs).
#[derive(Debug, thiserror::Error)]
#[error("the gateway failed while handling this request")]
pub struct Panicked;

pin_project_lite::pin_project! {
    /// A request's future, or the panic that ended it.
    #[project = Proj]
    pub enum Contained<F> {
        /// Still running.
        Running { #[pin] inner: F },
        /// It panicked.
        Panicked,
    }
}

impl<F> Contained<F> {
    /// The future `call` makes, or [`Contained::Panicked`] if making it
    /// panicked.
    pub fn call(call: impl FnOnce() -> F) -> Self {
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(inner) => Contained::Running { inner },
            Err(_) => Contained::Panicked,
        }
    }
}

impl<F, T> Future for Contained<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = match self.as_mut().project() {
            Proj::Running { inner } => catch_unwind(AssertUnwindSafe(|| inner.poll(cx))),
            Proj::Panicked => return Poll::Ready(Err(Panicked.into())),
        };
        match polled {
            Ok(poll) => poll,
            Err(_) => {
                self.set(Contained::Panicked);
                Poll::Ready(Err(Panicked.into()))
            }
        }
    }
}

/// Logs every panic as an `error` event with its location. The message is
/// logged only when it is a literal (`panic!("...")`): a formatted one can
/// quote what it was handling (a panic while slicing a string quotes the
/// string), and a request's data, a key among it, must not reach the log.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        let message = info
            .payload()
            .downcast_ref::<&'static str>()
            .copied()
            .unwrap_or("(not logged: it may quote request data)");
        tracing::error!(location, message, "panic");
    }));
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, ready};

    use super::*;

    fn panicked(result: Result<u8, BoxError>) -> bool {
        result.is_err_and(|e| e.is::<Panicked>())
    }

    #[tokio::test]
    async fn a_panic_making_or_polling_the_future_becomes_an_error() {
        let fine = Contained::call(|| ready(Ok::<u8, BoxError>(7)));
        assert_eq!(fine.await.unwrap(), 7);
        let refused = Contained::call(|| ready(Err::<u8, BoxError>("no".into())));
        assert_eq!(refused.await.unwrap_err().to_string(), "no");

        let made = Contained::call(|| -> std::future::Ready<Result<u8, BoxError>> {
            panic!("while making the future")
        });
        assert!(panicked(made.await));

        let mut polls = 0;
        let polled = Contained::call(|| {
            poll_fn(move |_| -> Poll<Result<u8, BoxError>> {
                polls += 1;
                assert!(polls == 1, "polled again after its panic");
                panic!("while polling")
            })
        });
        let mut polled = std::pin::pin!(polled);
        assert!(panicked(poll_fn(|cx| polled.as_mut().poll(cx)).await));
        // Polled again, it answers the same without touching the future.
        assert!(panicked(poll_fn(|cx| polled.as_mut().poll(cx)).await));
    }
}
