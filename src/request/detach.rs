//! Work that finishes even when the request that started it stops waiting.
//!
//! A flight's leader fetches for every request waiting on its key, so a client that hangs
//! up must not cancel that fetch. Spawning the fetch as a task of its own guarantees that,
//! but costs every miss a trip through the scheduler's queue before the lock is even asked
//! for: in a burst, behind every other connection's freshly read request (milliseconds in
//! a 200-client stampede), and on a quiet proxy often a wakeup of the other worker thread.
//! [`Finishing`] runs the work in the request's own task instead, and hands it to a task of
//! its own only when the request is dropped before it is done.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// `future`, polled by whoever awaits it, and finished in a spawned task if dropped early.
pub fn finishing<F>(future: F) -> Finishing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Finishing {
        future: Some(Box::pin(future)),
    }
}

/// See [`finishing`]. A panic inside the work ends the work, not the request's task.
pub struct Finishing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// `None` once the work is done (or panicked).
    future: Option<Pin<Box<F>>>,
}

/// The work panicked; the message, when it had one.
#[derive(Debug, thiserror::Error)]
#[error("panicked: {0}")]
pub struct Panicked(String);

impl<F> Future for Finishing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = Result<F::Output, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = self
            .future
            .as_mut()
            .expect("Finishing polled after it completed");
        let polled = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        let done = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(payload) => Err(Panicked(message(payload.as_ref()))),
        };
        self.future = None;
        Poll::Ready(done)
    }
}

impl<F> Drop for Finishing<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        // Outside a runtime (it is shutting down) there is nothing left to finish it for.
        if let Some(future) = self.future.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(future);
        }
    }
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn runs_in_the_callers_task_and_returns_the_output() {
        assert_eq!(finishing(async { 7 }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn dropped_half_way_it_still_finishes() {
        let done = Arc::new(AtomicBool::new(false));
        let work = finishing({
            let done = Arc::clone(&done);
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                done.store(true, Ordering::SeqCst);
            }
        });
        // The caller gives up after 10 ms, as a request does when its client hangs up.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), work)
                .await
                .is_err()
        );
        assert!(!done.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            done.load(Ordering::SeqCst),
            "the dropped work was not finished"
        );
    }

    #[tokio::test]
    async fn a_panic_is_an_error_for_the_caller() {
        let work = finishing(async {
            if true {
                panic!("boom");
            }
        });
        let error = work.await.unwrap_err();
        assert_eq!(error.to_string(), "panicked: boom");
    }
}
