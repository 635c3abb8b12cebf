//! A child process that is killed and reaped when dropped, with graceful termination.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

use crate::wait_until;

/// Owns a spawned peer; SIGKILLs and reaps it on drop so no test leaks processes.
#[derive(Debug)]
pub(crate) struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    /// Signals go to the child's whole process group (it was spawned as a group leader):
    /// for peers started through a wrapper script that forks the real server.
    group: bool,
}

impl ChildGuard {
    pub(crate) fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            name: name.into(),
            child,
            status: None,
            group: false,
        }
    }

    /// Like [`new`](Self::new) for a child spawned with `process_group(0)`: every signal,
    /// including the final SIGKILL, goes to its process group.
    pub(crate) fn new_group(name: impl Into<String>, child: Child) -> Self {
        let mut guard = Self::new(name, child);
        guard.group = true;
        guard
    }

    /// Sends `signal` to the process, or to its group; the caller checked it is not reaped.
    fn send(&self, signal: Signal) {
        let pid = Pid::from_child(&self.child);
        let _ = if self.group {
            kill_process_group(pid, signal)
        } else {
            kill_process(pid, signal)
        };
    }

    /// The exit status if the process has exited (reaping it), without blocking.
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        }
        self.status
    }

    /// Sends SIGTERM, waits up to `grace` for the process to exit, then SIGKILLs it.
    pub(crate) fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.try_status() {
            return status;
        }
        // The child is not reaped yet, so its pid cannot have been reused.
        self.send(Signal::TERM);
        // Child exit has no event std lets us wait on with a timeout, so poll.
        if wait_until(Instant::now() + grace, || self.try_status().is_some()) {
            return self.status.expect("status after exit");
        }
        self.kill()
    }

    /// Sends `signal` (e.g. SIGSTOP / SIGCONT) to the running process.
    pub(crate) fn signal(&mut self, signal: Signal) {
        if self.try_status().is_none() {
            // Not reaped yet, so the pid is still this process's.
            self.send(signal);
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        if self.group {
            // Members of the group may outlive its leader.
            let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        }
        if let Some(status) = self.try_status() {
            return status;
        }
        self.send(Signal::KILL);
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("reaping {}: {e}", self.name));
        self.status = Some(status);
        status
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.group {
            // The group may outlive its leader (a forked server): always signal it.
            let _ = kill_process_group(Pid::from_child(&self.child), Signal::KILL);
        }
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
