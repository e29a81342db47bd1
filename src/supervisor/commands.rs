//! Commands from the control socket to the supervisor's loop.
//!
//! The control server answers `status` on its own threads. Anything that
//! changes the host (`config apply`, `config confirm`) must run on the
//! supervisor's thread, which owns the service table: the connection
//! thread queues the command, wakes the loop and waits for the reply with
//! a timeout, so a stuck apply never pins a client forever.

use super::signals::SupervisorHandle;
use crate::control::ApplyRequest;
use std::collections::VecDeque;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A command for the supervisor's loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `walden config apply`.
    Apply(ApplyRequest),
    /// `walden config confirm`.
    Confirm,
    /// `walden guest start|stop|restart|eject|insert NAME [ISO]`.
    Guest {
        /// The operation.
        op: String,
        /// The guest.
        name: String,
        /// The ISO image of "insert".
        iso: Option<String>,
    },
}

/// The loop's answer: a JSON report, or what went wrong.
pub type Reply = Result<serde_json::Value, String>;

type Pending = (Command, Sender<Reply>);

/// The queue shared by the control server (producer) and the loop.
#[derive(Debug, Clone)]
pub struct CommandQueue {
    queue: Arc<Mutex<VecDeque<Pending>>>,
    wake: SupervisorHandle,
}

impl CommandQueue {
    /// An empty queue that wakes the loop through `wake`.
    pub fn new(wake: SupervisorHandle) -> Self {
        Self {
            queue: Arc::default(),
            wake,
        }
    }

    /// Queue `command` and wait up to `timeout` for the loop's reply.
    pub fn submit(&self, command: Command, timeout: Duration) -> Reply {
        let (tx, rx) = channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((command, tx));
        self.wake.wake();
        match rx.recv_timeout(timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "the supervisor did not answer within {} s; it may still be applying: \
                 check `walden status`",
                timeout.as_secs()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                Err("the supervisor dropped the command (it is stopping)".into())
            }
        }
    }

    /// Whether commands wait.
    pub fn pending(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The next command and where its reply goes.
    pub fn pop(&self) -> Option<(Command, Sender<Reply>)> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}
