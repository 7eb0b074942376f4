//! When two usernames are the same user: the rule the server gives its hub,
//! and the client uses to count one sender's pushes.

use imchat_core::Username;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// The key under which a name is unique: NFKC (so `ａｌｉｃｅ`, `𝐚𝐥𝐢𝐜𝐞` and
/// `ⓐlice` become `alice`), then lowercase, then the UTS #39 confusable
/// skeleton (so a Cyrillic `а` or a Greek `ο` count as the Latin letters
/// they look like), lowercased again: the skeleton maps some characters
/// to capitals (the digit `0` to `O`), so `0px` would not be `opx`.
/// Two names with the same key cannot be online at once.
///
/// A capital `I` is not `l`: it is the capital of `i`, and a key cannot
/// make `I` both `i` and `l` without making `mail` the same user as `mall`.
pub fn key(name: &Username) -> String {
    key_of(name.as_str())
}

/// [`key`] of any text.
fn key_of(name: &str) -> String {
    let folded: String = name
        .nfkc()
        .map(|c| latin_capital(c).map_or(c, |latin| latin.to_ascii_lowercase()))
        .collect::<String>()
        .to_lowercase();
    // Unicode lowercases the Turkish `İ` (U+0130) to `i` and a combining
    // dot above, which draws as `i` (the dot merges with its own) and
    // which the confusable table does not fold: `ALİCE` would be `alice`.
    let folded = folded.replace("i\u{307}", "i");
    // Lowercasing writes a Greek sigma at the end of a word as `ς`: the
    // same letter as `σ`, which the confusable table folds otherwise.
    let folded = folded.replace('ς', "σ");
    skeleton(&folded).collect::<String>().to_lowercase()
}

/// The Latin capital that a letter of another script imitates in its
/// capital form (Cyrillic `Т` and `т`, Greek `Ν` and `ν`: `T`, `N`), if
/// any. Both cases of such a letter go to the Latin letter: lowercased
/// first, `ТОМ` would not be `TOM` (the skeleton of Cyrillic `т` is a
/// small capital `ᴛ`, not `t`); mapped as capitals only, `ИВАН` would no
/// longer be `иван` (`в` is `ʙ`, `В` is `B`). Latin letters are left to
/// lowercasing (the skeleton of `I` is `l`).
fn latin_capital(c: char) -> Option<char> {
    if c.is_ascii() {
        return None;
    }
    let mut upper = c.to_uppercase();
    let (Some(capital), None) = (upper.next(), upper.next()) else {
        return None;
    };
    if capital.is_ascii() || !capital.is_uppercase() {
        return None;
    }
    let mut one = [0u8; 4];
    let mut looks = skeleton(capital.encode_utf8(&mut one));
    match (looks.next(), looks.next()) {
        (Some(latin), None) if latin.is_ascii_uppercase() => Some(latin),
        _ => None,
    }
}

/// The key under which a name is compared with the names online and the
/// names banned: its [`key`] with a capital `I` read as the `l` it looks
/// like in most fonts, so that `aIice` is `alice`, `MaIlory` is `mallory`
/// and `TI20` is `T120` (the key reads `1` as `l` already). The capitals
/// of other scripts that look the same (a Greek `Ι`, a Cyrillic `І`) and
/// the forms NFKC turns into an `I` (`Ｉ`, `Ⅰ`, `𝐈`) are read as `l` too.
///
/// A sharp s (`ß`, `ẞ`) is read as the `ss` it is written as in
/// capitals, so that `STRASSE` and `strasse` are refused while `straße`
/// is online, and the other way round.
///
/// Looser than [`key`], which must keep `I` apart from `l` so that `mail`
/// and `mall` stay two users (and the keys of registered names do not
/// change): a name is refused while another name with the same loose key
/// is online, or banned, but it is still its own user.
pub fn loose_key(name: &Username) -> String {
    loose_key_of(name.as_str())
}

/// The keys of the other names that `name` reads as, under which a
/// registration protects it too: its [`loose_key`] (`aIice` reads as
/// `alice`), and its key with `ss` written `ß` (`STRASSE` is how `straße`
/// is written in capitals); none that equals its own [`key`]. Each is the
/// key of a spelling of `name`, never of another name: a registration
/// found under one is of a name that looks the same.
///
/// One way only: `lan` is not checked against a registered `Ian` (the
/// store keeps keys, and the key of `Ian` is that of `ian` too).
pub fn look_alike_keys(name: &Username) -> Vec<String> {
    let own = key(name);
    let mut keys = Vec::new();
    let sharp = name.as_str().to_lowercase().replace("ss", "ß");
    for k in [loose_key(name), key_of(&sharp)] {
        if k != own && !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// [`loose_key`] of any text.
fn loose_key_of(name: &str) -> String {
    let read: String = name
        .nfkc()
        .filter(|c| !decorates(*c))
        .map(|c| if reads_as_l(c) { 'l' } else { c })
        .collect();
    // A sharp s is the ss it is written as in capitals (`STRASSE` is the
    // capital of `straße`) and in Swiss German (`Strasse`): lowercasing
    // keeps `ß`, and the confusable table does not fold it either.
    key_of(&read.replace(['ß', 'ẞ'], "ss"))
}

/// Whether `c` is a mark drawn around or across the letter before it
/// rather than a part of the word: an enclosing mark (general category
/// Me: the keycap and circle of `bob⃝`, the Cyrillic numeral signs of
/// `bob҉`) or an overlay (canonical combining class 1: the strokes and
/// slashes of `b̶o̶b̶`) that belongs to no one script. The letters stay
/// readable through it, so [`loose_key`] reads the name without it.
///
/// The overlays of a script of their own are letters' marks there (Bassa
/// Vah writes its tones with them, Kharoshthi and Duployan a sign each)
/// and are kept; Unicode's enclosing marks are none of a living script's
/// words (Cyrillic's are numeral signs of Church Slavonic).
fn decorates(c: char) -> bool {
    use unicode_normalization::char::canonical_combining_class;
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    use unicode_script::{Script, UnicodeScript};
    if c.is_ascii() {
        return false;
    }
    c.general_category() == GeneralCategory::EnclosingMark
        || (canonical_combining_class(c) == 1
            && matches!(c.script(), Script::Common | Script::Inherited))
}

/// Whether `c` is a capital that the confusable table reads as `l` (it
/// does for `I`): lowercased by [`key`] it would be an `i`.
fn reads_as_l(c: char) -> bool {
    if c.is_ascii() {
        return c == 'I';
    }
    let mut one = [0u8; 4];
    c.is_uppercase() && skeleton(c.encode_utf8(&mut one)).eq("l".chars())
}

/// The reserved word `name` still reads as when its marks are dropped
/// (`admiṅ`) and under [`loose_key`] (`aII`, a capital `I` for `l`):
/// looser than [`key`], which must keep `I` apart from `l` (`mail` and
/// `mall` are two users), but a name that passes for `all` or `admin` is
/// refused whatever else it is. (The hub refuses names with a reserved
/// word's [`key`] itself.)
fn loosely_reserved(name: &Username) -> Option<&'static str> {
    let unmarked: String = name
        .as_str()
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .collect();
    let loose = loose_key_of(&unmarked);
    imchat_core::RESERVED_USERNAMES
        .iter()
        .find(|word| key_of(word) == loose)
        .copied()
}

/// Whether `c` is a letter Unicode keeps out of identifiers as technical
/// (phonetic: the small capitals `ʙ`, `ᴏ`, the script `ɡ`) or, in the
/// Latin script, as obsolete (the medieval `ꜱ`, `ꝺ`): UTS #39's identifier
/// types. Such letters look like common ones (`ʙᴏʙ` for `bob`) without
/// being their look-alikes in the confusable table, so a key cannot fold
/// them, and no one needs them in a name. The letters of living scripts
/// (limited use ones too), polytonic Greek and combining marks are not
/// among them.
fn passes_for_another(c: char) -> bool {
    use unicode_script::{Script, UnicodeScript};
    use unicode_security::general_security_profile::IdentifierType;
    use unicode_security::GeneralSecurityProfile;
    if is_combining_mark(c) {
        return false;
    }
    match c.identifier_type() {
        Some(IdentifierType::Technical) => true,
        Some(IdentifierType::Obsolete) => c.script() == Script::Latin,
        _ => false,
    }
}

/// Combining marks allowed in a row: enough for any script's stacked
/// vowel signs and tones (Vietnamese `ệ` decomposed takes two), not for
/// a tower of marks over the line.
const MAX_MARKS_IN_A_ROW: usize = 4;

/// The server's rule for names beyond the protocol's (given to its hub):
/// a name may not start with a combining mark (alone it shows as nothing,
/// or sits on the character before it: several such users would look
/// alike, or empty), nor stack more than [`MAX_MARKS_IN_A_ROW`] marks.
pub fn check(name: &Username) -> Result<(), String> {
    if let Some(word) = loosely_reserved(name) {
        return Err(format!("'{name}' looks like the reserved name '{word}'"));
    }
    if let Some(c) = name.as_str().chars().find(|c| passes_for_another(*c)) {
        return Err(format!(
            "it has U+{:04X} ({c}), a phonetic or obsolete letter that passes for another (a small capital ʙ for b, a script ɡ for g): use the letter it looks like",
            u32::from(c)
        ));
    }
    let mut marks = 0;
    for (i, c) in name.as_str().chars().enumerate() {
        if !is_combining_mark(c) {
            marks = 0;
            continue;
        }
        if i == 0 {
            return Err(format!(
                "it starts with a combining mark (U+{:04X}), which does not show on its own",
                u32::from(c)
            ));
        }
        marks += 1;
        if marks > MAX_MARKS_IN_A_ROW {
            return Err(format!(
                "more than {MAX_MARKS_IN_A_ROW} combining marks in a row"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{key, look_alike_keys};
    use imchat_core::Username;

    fn k(s: &str) -> String {
        key(&Username::new(s).unwrap())
    }

    #[test]
    fn names_that_read_as_a_reserved_word_are_refused() {
        let refused = |s: &str| super::check(&Username::new(s).unwrap()).is_err();
        // A capital I for l, a mark added: still the word.
        for fake in ["aII", "AlI", "admi\u{307}n", "ádmin", "sérver", "SYSTEⅯ"] {
            assert!(refused(fake), "{fake}");
        }
        assert_eq!(
            super::check(&Username::new("aII").unwrap()),
            Err("'aII' looks like the reserved name 'all'".to_string())
        );
        // Other names with an I, or a word inside, are anyone's.
        for fine in ["mail", "Ian", "AIice", "admins", "allie", "server_", "Zoë"] {
            assert!(!refused(fine), "{fine}");
        }
    }

    #[test]
    fn look_alikes_share_the_key_of_the_name_they_imitate() {
        let alice = k("alice");
        for fake in ["аlice", "ａｌｉｃｅ", "𝐚𝐥𝐢𝐜𝐞", "ⓐlice", "ALICE", "Alice"]
        {
            assert_eq!(k(fake), alice, "{fake}");
        }
        assert_eq!(k("bοb"), k("bob"));
        // A decomposed accent is the composed letter.
        assert_eq!(k("Jose\u{301}"), k("josé"));
        // The Turkish dotted capital lowercases to i and a dot above.
        assert_eq!(k("ALİCE"), alice);
        assert_eq!(k("İ"), k("i"));
        // The skeleton maps the digit 0 to a capital O.
        for (fake, real) in [
            ("0liver", "oliver"),
            ("0px", "opx"),
            ("0PX", "opx"),
            ("b0b", "bob"),
            ("B0B", "Bob"),
            ("0", "o"),
            ("a1ice", "alice"),
        ] {
            assert_eq!(k(fake), k(real), "{fake} {real}");
        }
    }

    #[test]
    fn capitals_of_other_scripts_are_the_latin_capitals_they_imitate() {
        // Cyrillic and Greek capitals; lowercased first, each kept a key
        // of its own (`ТОМ` was `ᴛoʍ`).
        for (fake, real) in [
            ("ТОМ", "TOM"),
            ("НANK", "HANK"),
            ("ΝINA", "NINA"),
            ("ΒETH", "BETH"),
            ("МAX", "MAX"),
            ("ΗEIDI", "HEIDI"),
            ("Кate", "Kate"),
            ("ВОВ", "BOB"),
            ("Вob", "bob"),
            ("ΝΙΝΑ", "nina"),
        ] {
            assert_eq!(k(fake), k(real), "{fake} {real}");
        }
        assert_eq!(k("TOM"), k("tom"));
        // And each name is still one user in capitals and in small letters.
        for (capitals, small) in [
            ("ИВАН", "иван"),
            ("ИВАН", "Иван"),
            ("ВЕРА", "вера"),
            ("МАРИЯ", "мария"),
            ("НИНА", "Нина"),
            ("ТОМ", "том"),
            ("ΕΛΕΝΗ", "ελενη"),
            ("ΝΙΚΟΣ", "νικος"),
            ("ΝΙΚΟΣ", "νικοσ"),
            ("ΣΟΦΙΑ", "σοφια"),
            ("ОЛЕГ", "олег"),
        ] {
            assert_eq!(k(capitals), k(small), "{capitals} {small}");
        }
        // Names that differ stay apart.
        for (a, b) in [("NINA", "НИНА"), ("OLEG", "ОЛЕГ"), ("IVAN", "ИВАН")] {
            assert_ne!(k(a), k(b), "{a} {b}");
        }
        // Latin capitals stay the capitals of their small letters.
        assert_eq!(k("MAIL"), k("mail"));
        assert_ne!(k("MAIL"), k("mall"));
        assert_ne!(k("MAIL"), k("MALL"));
    }

    /// Phonetic small capitals and the like pass for other letters and
    /// are no one's look-alikes in the confusable table: refused, while
    /// the letters of living scripts (limited use ones too) are not.
    #[test]
    fn phonetic_letters_that_pass_for_others_are_refused() {
        let c = |s: &str| super::check(&Username::new(s).unwrap());
        for bad in ["ʙᴏʙ", "ᴀʟʟ", "bᴏb", "ɡreg", "ꜱam", "ꝺave"] {
            let refused = c(bad).expect_err(bad);
            assert!(refused.contains("passes for another"), "{bad}: {refused}");
        }
        assert!(c("ʙᴏʙ").unwrap_err().starts_with("it has U+0299 (ʙ)"));
        for good in [
            "bob",
            "Ꭺᏼ",
            "ŋoma",
            "Şəhla",
            "ʻOla",
            "Ødegård",
            "Ivan",
            "Иван",
            "ἀλέξης",
        ] {
            assert_eq!(c(good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn a_name_may_not_start_with_a_mark_nor_stack_them() {
        let c = |s: &str| super::check(&Username::new(s).unwrap());
        for bad in [
            "\u{345}",
            "\u{345}\u{345}",
            "\u{93f}",
            "\u{93f}bob",
            "\u{301}bob",
            "\u{94d}",
        ] {
            assert!(c(bad).is_err(), "{bad:?}");
        }
        assert!(c(&format!("a{}", "\u{345}".repeat(5))).is_err());
        for good in [
            "alice",
            "Zoë",
            "việt",
            "क\u{93f}",
            "हिन्दी",
            "Jose\u{301}",
            "a\u{345}\u{345}",
            "山田",
        ] {
            assert_eq!(c(good), Ok(()), "{good:?}");
        }
    }

    fn loose(s: &str) -> String {
        super::loose_key(&Username::new(s).unwrap())
    }

    #[test]
    fn a_capital_i_is_read_as_l_under_the_loose_key() {
        // The tester's names: a capital I for l, beside a 1 for l.
        for (fake, real) in [
            ("aIice", "alice"),
            ("aIice", "a1ice"),
            ("MaIlory", "mallory"),
            ("MaIlory", "Mallory"),
            ("TI20", "T120"),
            ("TI20", "Tl20"),
            ("Ivan", "lvan"),
            ("MAIL", "mall"),
            ("maIl", "mall"),
        ] {
            assert_eq!(loose(fake), loose(real), "{fake} {real}");
            assert_ne!(k(fake), k(real), "{fake} {real}: the key keeps them apart");
        }
        // The capitals that look like I in other scripts and NFKC's forms
        // of it: Greek Ι, Cyrillic І, fullwidth Ｉ, the numeral Ⅰ,
        // mathematical bold 𝐈, the Latin capital iota Ɩ.
        for fake in ["aΙice", "aІice", "aＩice", "aⅠice", "a𝐈ice", "aƖice"] {
            assert_eq!(loose(fake), loose("alice"), "{fake}");
        }
        // NFKC makes two letters of the numeral Ⅱ.
        assert_eq!(loose("aⅡen"), loose("allen"));
        // Look-alikes the key folds, the loose key folds too.
        for (a, b) in [("alice", "Alice"), ("аlice", "alice"), ("b0b", "bob")] {
            assert_eq!(loose(a), loose(b), "{a} {b}");
        }
        // But not a capital I meant as a capital i: `ALICE` reads as
        // `ALLCE` (the hub compares a name's key too, see `Hub`).
        assert_eq!(loose("ALICE"), loose("allce"));
        assert_eq!(k("ALICE"), loose("aIice"));
        // A small i is not l; nor is a name without a capital I changed.
        for (a, b) in [
            ("mail", "mall"),
            ("ivan", "lvan"),
            ("alice", "aiice"),
            ("Mail", "mall"),
        ] {
            assert_ne!(loose(a), loose(b), "{a} {b}");
        }
        for name in ["alice", "mail", "Zoë", "Иван", "山田", "T120"] {
            assert_eq!(loose(name), k(name), "{name}");
        }
    }

    #[test]
    fn a_name_reads_as_the_registered_names_it_looks_like() {
        for (name, registered) in [
            ("aIice", "alice"),
            ("MaIlory", "mallory"),
            ("STRASSE", "straße"),
            ("strasse", "Straße"),
            ("weiß", "weiss"),
        ] {
            let keys = look_alike_keys(&Username::new(name).unwrap());
            assert!(keys.contains(&k(registered)), "{name}: {keys:?}");
        }
        // A plain name has none but its own.
        assert!(look_alike_keys(&Username::new("alice").unwrap()).is_empty());
        // Another name is not among them.
        assert!(!look_alike_keys(&Username::new("aIice").unwrap()).contains(&k("aiice")));
    }

    /// Marks drawn around or across the letters (enclosing: keycap,
    /// circle, Cyrillic numeral signs; overlays: strokes and slashes)
    /// leave the name readable as it is without them.
    #[test]
    fn enclosing_and_overlay_marks_do_not_count_under_the_loose_key() {
        for fake in [
            "bob\u{20dd}",
            "bob\u{20e3}",
            "bob\u{0336}",
            "b\u{0336}o\u{0336}b\u{0336}",
            "b\u{0335}o\u{0334}b\u{0338}",
            "bob\u{0489}",
            "bob\u{0488}",
            "b\u{20d2}ob",
            "bob\u{1abe}",
            "bob\u{a670}",
            "bob\u{1ce2}",
            "Bob\u{20dd}",
        ] {
            assert_eq!(loose(fake), loose("bob"), "{fake:?}");
            assert!(
                super::check(&Username::new(fake).unwrap()).is_ok(),
                "{fake:?}"
            );
        }
        // Among other look-alike foldings: a capital I for l, a Cyrillic о.
        assert_eq!(loose("aI\u{20dd}ice"), loose("alice"));
        assert_eq!(loose("b\u{43e}\u{336}b"), loose("bob"));
        // Registration protects the plain name from its decorated forms.
        let keys = look_alike_keys(&Username::new("bob\u{20dd}").unwrap());
        assert!(keys.contains(&k("bob")), "{keys:?}");
        // The key keeps them apart (registered keys do not change).
        assert_ne!(k("bob\u{0336}"), k("bob"));
        // Marks that are part of a word still count: accents, Devanagari
        // vowel signs, and the tone marks of Bassa Vah (overlays too).
        for (a, b) in [
            ("zoë", "zoe"),
            ("ki\u{301}", "ki"),
            ("क\u{93f}", "क"),
            ("\u{16ad0}\u{16af0}", "\u{16ad0}"),
            ("\u{16ad0}\u{16af4}", "\u{16ad0}\u{16af0}"),
        ] {
            assert_ne!(loose(a), loose(b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn a_sharp_s_is_read_as_ss_under_the_loose_key() {
        // `STRASSE` is how `straße` is written in capitals, `strasse` how
        // it is written in Switzerland: one name to a reader.
        for (a, b) in [
            ("straße", "STRASSE"),
            ("straße", "strasse"),
            ("STRAẞE", "strasse"),
            ("Straße", "straße"),
            ("Weiß", "weiss"),
        ] {
            assert_eq!(loose(a), loose(b), "{a} {b}");
        }
        // The name key stays as it was, so a registered name keeps its key.
        assert_ne!(k("straße"), k("strasse"));
        // A name without a sharp s is not changed.
        assert_eq!(loose("strasse"), k("strasse"));
    }

    #[test]
    fn different_names_keep_different_keys() {
        for (a, b) in [
            ("alice", "alicia"),
            ("bob", "rob"),
            ("山田", "田山"),
            ("zoë", "zoe2"),
            ("oliver", "olivier"),
            ("opx", "op"),
            ("0px", "1px"),
            ("bob", "b0b0"),
            // Small i and small l stay apart; a capital I is an i, so it
            // is not l either (`aIice` is not `alice`, `Ivan` not `lvan`).
            ("mail", "mall"),
            ("ivan", "lvan"),
            ("Ivan", "lvan"),
            ("aIice", "alice"),
        ] {
            assert_ne!(k(a), k(b), "{a} {b}");
        }
    }
}
