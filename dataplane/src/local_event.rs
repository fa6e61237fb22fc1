//! Wake-up primitives for tasks of one shard. They are `!Send` on purpose:
//! a shard's tasks never leave its thread, so no atomics are needed.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Wakes one waiting task; a notification sent while nobody waits is kept
/// until the next wait (like `tokio::sync::Notify::notify_one`).
#[derive(Default)]
pub struct LocalNotify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Wakes the waiter, or lets the next wait return at once.
    pub fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits for the next notification.
    pub async fn wait(&self) {
        poll_fn(|context| {
            if self.notified.replace(false) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// A flag that is set once and wakes every task waiting for it (shutdown).
#[derive(Default)]
pub struct LocalEvent {
    set: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl LocalEvent {
    /// Sets the event and wakes every waiter.
    pub fn set(&self) {
        self.set.set(true);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Whether the event was set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Waits until the event is set.
    pub async fn wait(&self) {
        poll_fn(|context| {
            if self.set.get() {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            // A waiter polled again without being woken must not pile up entries.
            if !wakers.iter().any(|waker| waker.will_wake(context.waker())) {
                wakers.push(context.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Lets every other ready task of the shard run before continuing (monoio
/// has no `yield_now`; a self-wake during poll puts the task at the back of
/// the run queue).
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|context| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        context.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
