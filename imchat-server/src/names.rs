//! When two usernames are the same user: the rule the server gives its hub.

use imchat_core::Username;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// The key under which a name is unique: NFKC (so `ａｌｉｃｅ`, `𝐚𝐥𝐢𝐜𝐞` and
/// `ⓐlice` become `alice`), then lowercase, then the UTS #39 confusable
/// skeleton (so a Cyrillic `а` or a Greek `ο` count as the Latin letters
/// they look like). Two names with the same key cannot be online at once.
pub fn key(name: &Username) -> String {
    let folded: String = name.as_str().nfkc().collect::<String>().to_lowercase();
    skeleton(&folded).collect()
}

#[cfg(test)]
mod tests {
    use super::key;
    use imchat_core::Username;

    fn k(s: &str) -> String {
        key(&Username::new(s).unwrap())
    }

    #[test]
    fn look_alikes_share_the_key_of_the_name_they_imitate() {
        let alice = k("alice");
        for fake in ["аlice", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞", "ⓐlice", "ALICE", "Alice"]
        {
            assert_eq!(k(fake), alice, "{fake}");
        }
        assert_eq!(k("bοb"), k("bob"));
    }

    #[test]
    fn different_names_keep_different_keys() {
        for (a, b) in [
            ("alice", "alicia"),
            ("bob", "rob"),
            ("山田", "田山"),
            ("zoë", "zoe2"),
        ] {
            assert_ne!(k(a), k(b), "{a} {b}");
        }
    }
}
