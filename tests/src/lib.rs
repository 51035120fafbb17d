//! Host-side client and integration tests (work in progress).
