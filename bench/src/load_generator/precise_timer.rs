//! A timer with microsecond precision for tokio, on a Linux `timerfd`.
//!
//! tokio's own timer has millisecond resolution: a send due at 10.3 ms goes
//! out at 11 ms or later. An open-loop generator charges that lateness to the
//! server (latency runs from the intended send time), so `ws-echo` spins with
//! `yield_now` for the last 2 ms before each send, which keeps a client core
//! busy. A chat benchmark shares two cores with a server of several
//! processes, so it cannot afford the spin: a `timerfd` armed at an absolute
//! `CLOCK_MONOTONIC` time wakes the runtime's epoll within tens of
//! microseconds of the deadline and costs nothing while it waits. No crate
//! offers this for tokio, hence these few lines of `libc`.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// One `timerfd` registered with the current tokio runtime.
#[derive(Debug)]
pub struct PreciseTimer {
    timer_fd: AsyncFd<OwnedFd>,
}

impl PreciseTimer {
    /// A disarmed timer on `CLOCK_MONOTONIC` (the clock of `Instant`).
    /// Must be called inside a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<PreciseTimer> {
        // SAFETY: timerfd_create takes no pointers; a non-negative result is
        // a new descriptor that we own from here on.
        let raw_fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw_fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw_fd is a fresh descriptor owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(raw_fd) };
        // SAFETY: an OwnedFd stays open and names the same descriptor until
        // it is dropped, which happens only with the AsyncFd.
        let timer_fd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(|error| io::Error::other(error.to_string()))?;
        Ok(PreciseTimer { timer_fd })
    }

    /// Waits until `deadline`; returns at once if it has passed.
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        self.arm(monotonic_now()? + (deadline - now).as_nanos() as u64)?;
        // Bounded: the timer fires once at the deadline; a spurious
        // readiness without an expiry is followed by a real one.
        loop {
            let mut guard = self.timer_fd.readable().await?;
            let mut expirations = [0u8; 8];
            let fd = guard.get_inner().as_raw_fd();
            // SAFETY: reads at most 8 bytes into an 8-byte buffer.
            let n_read = unsafe { libc::read(fd, expirations.as_mut_ptr().cast(), 8) };
            if n_read == 8 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            guard.clear_ready();
        }
    }

    fn arm(&self, deadline_ns: u64) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: spec is a valid itimerspec; the old value is not wanted.
        let status = unsafe {
            libc::timerfd_settime(
                self.timer_fd.get_ref().as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn monotonic_now() -> io::Result<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into `now`.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_within_a_millisecond_of_a_deadline_between_milliseconds() {
        let mut timer = PreciseTimer::new().unwrap();
        let mut lateness_us = Vec::new();
        for attempt in 0..20u64 {
            let deadline = Instant::now() + Duration::from_micros(1_300 + attempt * 37);
            timer.sleep_until(deadline).await.unwrap();
            let woke = Instant::now();
            assert!(woke >= deadline, "never early");
            lateness_us.push((woke - deadline).as_micros());
        }
        lateness_us.sort_unstable();
        // The median: a loaded CI machine may delay a few wake-ups.
        assert!(lateness_us[10] < 1_000, "{lateness_us:?}");
    }

    #[tokio::test]
    async fn a_past_deadline_returns_at_once() {
        let mut timer = PreciseTimer::new().unwrap();
        let started = Instant::now();
        timer
            .sleep_until(started - Duration::from_millis(5))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(5));
    }
}
