//! [`GraphScope`]: which thread is inside a [`super::Backend::graph`] submission of a wrapper
//! backend, so that the launches it makes on the way pass straight through the wrapper (the
//! retry layer retries the graph as a whole; the fault injector draws once for it).

use std::thread::ThreadId;

use parking_lot::Mutex;

/// The thread running a graph's body through a wrapper, if one is.
#[derive(Debug, Default)]
pub(crate) struct GraphScope {
    owner: Mutex<Option<ThreadId>>,
}

/// Inside the scope until dropped.
pub(crate) struct InGraph<'a> {
    scope: &'a GraphScope,
    outer: Option<ThreadId>,
}

impl GraphScope {
    /// Marks the calling thread as inside a graph until the guard drops.
    pub(crate) fn enter(&self) -> InGraph<'_> {
        let outer = self.owner.lock().replace(std::thread::current().id());
        InGraph { scope: self, outer }
    }

    /// Whether the calling thread is inside a graph of this wrapper.
    pub(crate) fn is_current(&self) -> bool {
        *self.owner.lock() == Some(std::thread::current().id())
    }
}

impl Drop for InGraph<'_> {
    fn drop(&mut self) {
        *self.scope.owner.lock() = self.outer;
    }
}
