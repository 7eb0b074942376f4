//! The full-screen terminal interface.

mod complete;
mod editor;
mod history;
mod keys;
