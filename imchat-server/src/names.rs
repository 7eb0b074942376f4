//! When two usernames are the same user: the rule the server gives its hub
//! (shared with the client, which counts one sender's pushes by it).

pub use imchat_cli::names::{check, key, look_alike_keys, loose_key};
