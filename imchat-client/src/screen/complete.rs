//! Tab completion of commands, online nicks, shared file names, local
//! paths and transfers, with repeated Tab cycling through the candidates.

use std::ffi::OsStr;
use std::path::Path;

use crate::command::{lookup, typed_file_name, PATH_QUOTES};

/// What completion can offer.
#[derive(Debug, Default, Clone)]
pub struct Sources<'a> {
    /// Command names with their `/` (all commands and aliases).
    pub commands: &'a [String],
    /// Who is online (ourselves left out).
    pub nicks: &'a [String],
    /// Shared file names, as last listed.
    pub files: &'a [String],
    /// Running transfers: ids (`#3`) and file names.
    pub transfers: &'a [String],
    /// The offers waiting for an answer: their ids as `/accept` and
    /// `/decline` take them (`3`, as their rows say).
    pub offers: &'a [String],
    /// Local paths starting as the argument of `/sendfile` typed so far
    /// ([`local_paths`]).
    pub paths: &'a [String],
}

/// At most this many entries of a folder are read for a completion.
const FOLDER_ENTRIES: usize = 4096;

/// A completion in progress: the text it replaces and the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The line with the completed word cut out: `line[..start]` and
    /// `line[start..]` around the candidate.
    before: String,
    after: String,
    /// What goes after each candidate (`: ` for a nick that starts the line).
    suffix: &'static str,
    /// The candidates, sorted.
    candidates: Vec<String>,
    /// The one shown.
    index: usize,
}

impl Cycle {
    /// Starts completing the word before `cursor` in `line`; `None` when
    /// nothing matches. `backwards` starts with the last candidate.
    pub fn start(line: &str, cursor: usize, sources: &Sources, backwards: bool) -> Option<Self> {
        let (start, pool, suffix) = context(&line[..cursor], sources);
        // A space already there is not doubled (`b| and` gives `bob: and`).
        let suffix = match suffix.strip_suffix(' ') {
            Some(bare) if line[cursor..].starts_with(' ') => bare,
            _ => suffix,
        };
        let prefix = line[start..cursor].to_lowercase();
        let mut candidates: Vec<String> = pool
            .into_iter()
            .filter(|c| c.to_lowercase().starts_with(&prefix))
            .collect();
        // The nick list's order (`u2` before `u10`, case ignored).
        candidates.sort_by(|a, b| imchat_core::name_order(a, b));
        candidates.dedup();
        if candidates.is_empty() {
            return None;
        }
        let index = if backwards { candidates.len() - 1 } else { 0 };
        Some(Self {
            before: line[..start].to_owned(),
            after: line[cursor..].to_owned(),
            suffix,
            candidates,
            index,
        })
    }

    /// Whether the one candidate is a folder (a local path ending in
    /// `/`), which a next Tab completes into rather than cycling.
    pub fn is_one_folder(&self) -> bool {
        matches!(self.candidates.as_slice(), [only] if only.ends_with('/') && self.suffix.is_empty())
    }

    /// The next candidate (Tab), or the previous one (Shift-Tab).
    pub fn step(&mut self, backwards: bool) {
        let n = self.candidates.len();
        self.index = if backwards {
            (self.index + n - 1) % n
        } else {
            (self.index + 1) % n
        };
    }

    /// The line with the current candidate, and the cursor after it.
    pub fn line(&self) -> (String, usize) {
        let mut line = format!(
            "{}{}{}",
            self.before, self.candidates[self.index], self.suffix
        );
        let cursor = line.len();
        line.push_str(&self.after);
        (line, cursor)
    }
}

/// Whether the word before the cursor (`head` is the text before it) is
/// completed from the shared file names: after `/download` (or `/get`).
pub fn completes_files(head: &str) -> bool {
    head.split_once(' ')
        .is_some_and(|(first, _)| command_name(first) == "/download")
}

/// The argument of `/sendfile` (or `/send`) typed before the cursor
/// (`head` is the text before it), when it is one.
pub fn sendfile_argument(head: &str) -> Option<&str> {
    let (first, rest) = head.split_once(' ')?;
    (command_name(first) == "/sendfile").then(|| rest.trim_start_matches(' '))
}

/// The local paths that complete `typed`, a path as `/sendfile` takes it
/// (relative to the working folder, `~/` the home folder `home`; after
/// an opening quote, within it): the
/// entries of its folder whose names start as its last part does (case
/// ignored), each as typed up to that part, a folder's with a `/` after
/// it. Hidden entries only when the part starts with a dot; none when the
/// folder cannot be read.
pub fn local_paths(typed: &str, home: Option<&OsStr>) -> Vec<String> {
    // In quotes, as `/sendfile` takes a path (`"my fi`, `“my fi`):
    // completed within them, a file's closed, a folder's left open to go
    // on into it. Closed already, the path is typed.
    for (open, close) in PATH_QUOTES {
        if let Some(inner) = typed.strip_prefix(open) {
            if inner.contains(close) {
                return Vec::new();
            }
            let quoted = |path: String| {
                if path.ends_with('/') {
                    format!("{open}{path}")
                } else {
                    format!("{open}{path}{close}")
                }
            };
            return local_paths(inner, home).into_iter().map(quoted).collect();
        }
    }
    let (folder, part) = match typed.rfind('/') {
        Some(i) => typed.split_at(i + 1),
        None => ("", typed),
    };
    let read = if folder.is_empty() {
        Path::new(".").to_path_buf()
    } else {
        crate::files::expand_home(folder, home)
    };
    let Ok(entries) = std::fs::read_dir(&read) else {
        return Vec::new();
    };
    let part = part.to_lowercase();
    let mut paths = Vec::new();
    for entry in entries.take(FOLDER_ENTRIES).flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.to_lowercase().starts_with(&part)
            || (name.starts_with('.') && !part.starts_with('.'))
        {
            continue;
        }
        // A link to a folder is a folder to go into.
        let folder_entry = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        let slash = if folder_entry { "/" } else { "" };
        paths.push(format!("{folder}{name}{slash}"));
    }
    paths
}

/// `word`, the first word of a line, in lower case, an alias as the
/// command it stands for (`/get`: `/download`, `/?`: `/help`), so that
/// what follows completes as it does after the command's name.
fn command_name(word: &str) -> String {
    let lower = word.to_lowercase();
    let Some(bare) = lower.strip_prefix('/') else {
        return lower;
    };
    match lookup(bare) {
        Some(info) if !info.names.contains(&bare) => format!("/{}", info.names[0]),
        _ => lower,
    }
}

/// Where the word to complete starts in `head` (the text before the
/// cursor), what it completes from, and what follows a candidate. The
/// words after `/msg`, `/unicast`, `/tell`, `/w`, `/mode unicast`, `@` and
/// `/sendfile <path>` are nicks like any other word.
fn context(head: &str, sources: &Sources) -> (usize, Vec<String>, &'static str) {
    let word_start = head.rfind(' ').map_or(0, |i| i + 1);
    let first_word = head.split(' ').next().unwrap_or("");
    let first = command_name(first_word);
    let is_first_word = word_start == 0;
    if first.starts_with('/') {
        if is_first_word {
            // Followed by a space, as in irssi and weechat: `/dow` Tab
            // then `big` read `/downloadbig`, an unknown command.
            return (0, sources.commands.to_vec(), " ");
        }
        // The rest of the line after the command and the blanks after
        // it (the command takes its argument without them), for names
        // with spaces.
        let after = &head[first_word.len()..];
        let rest = head.len() - after.trim_start_matches(' ').len();
        match first.as_str() {
            "/download" => {
                // Typed after an opening quote (`/download "mee`), in
                // quotes, as `/download` takes a name.
                let quote = head[rest..]
                    .chars()
                    .next()
                    .filter(|c| matches!(c, '"' | '\''));
                let typed = sources.files.iter().map(|f| match quote {
                    Some(q) => format!("{q}{f}{q}"),
                    None => typed_file_name(f).into_owned(),
                });
                return (rest, typed.collect(), "");
            }
            "/cancel" => return (rest, sources.transfers.to_vec(), ""),
            // A local path; past it (`/sendfile a.txt bo`), a nick.
            "/sendfile" if !sources.paths.is_empty() => {
                return (rest, sources.paths.to_vec(), "");
            }
            // They take an offer's id, never a nick: `/accept bob` is
            // only refused.
            "/accept" | "/decline" => return (rest, sources.offers.to_vec(), ""),
            // `/mode broadcast` or `/mode unicast <nick>`: a nick only
            // after `unicast`.
            "/mode" if word_start == rest => {
                let modes = ["broadcast", "unicast"].map(str::to_owned);
                return (rest, modes.to_vec(), " ");
            }
            "/mode" => {
                let mode = head[rest..word_start].trim_end();
                if !mode.eq_ignore_ascii_case("unicast") {
                    return (word_start, Vec::new(), "");
                }
            }
            "/help" if word_start == rest => {
                // `/help /ms` and `/help ms` both complete.
                let pool = if head[rest..].starts_with('/') {
                    sources.commands.to_vec()
                } else {
                    let bare = sources.commands.iter();
                    bare.map(|c| c.trim_start_matches('/').to_owned()).collect()
                };
                return (rest, pool, "");
            }
            _ => {}
        }
    }
    // A nick is followed by what comes next, as in irssi and weechat: a
    // space, so that the text typed after it is not glued to it.
    if head[word_start..].starts_with('@') {
        return (word_start + 1, sources.nicks.to_vec(), " ");
    }
    // Nicks listed with commas (`bob,ca`, no space after the comma, as
    // irssi takes them): the nick starts after the last comma. No name
    // has one.
    let nick_start = head[word_start..]
        .rfind(',')
        .map_or(word_start, |i| word_start + i + 1);
    let suffix = if is_first_word { ": " } else { " " };
    (nick_start, sources.nicks.to_vec(), suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    struct Fixture {
        commands: Vec<String>,
        nicks: Vec<String>,
        files: Vec<String>,
        transfers: Vec<String>,
        offers: Vec<String>,
        paths: Vec<String>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                commands: strings(&["/help", "/who", "/download", "/downloads", "/msg", "/mode"]),
                nicks: strings(&["bob", "Bea", "carol"]),
                files: strings(&["meeting notes.txt", "Music.mp3", "big.iso"]),
                transfers: strings(&["#3", "#12", "big.iso"]),
                offers: Vec::new(),
                paths: Vec::new(),
            }
        }

        fn sources(&self) -> Sources<'_> {
            Sources {
                commands: &self.commands,
                nicks: &self.nicks,
                files: &self.files,
                transfers: &self.transfers,
                offers: &self.offers,
                paths: &self.paths,
            }
        }

        /// Every line Tab gives, `tabs` times, from `line` (cursor at its end).
        fn tab(&self, line: &str, tabs: usize) -> Vec<String> {
            let mut cycle = match Cycle::start(line, line.len(), &self.sources(), false) {
                Some(c) => c,
                None => return Vec::new(),
            };
            let mut seen = vec![cycle.line().0];
            for _ in 1..tabs {
                cycle.step(false);
                seen.push(cycle.line().0);
            }
            seen
        }
    }

    #[test]
    fn commands_complete_in_the_first_word_and_cycle() {
        let f = Fixture::new();
        assert_eq!(f.tab("/he", 1), ["/help "]);
        assert_eq!(
            f.tab("/DOW", 3),
            ["/download ", "/downloads ", "/download "]
        );
        assert_eq!(f.tab("/m", 2), ["/mode ", "/msg "]);
        assert!(f.tab("/zz", 1).is_empty());
    }

    /// What is typed after a completed command is its argument, not the
    /// rest of its name; a space already after the cursor is not doubled.
    #[test]
    fn a_completed_command_is_followed_by_one_space() {
        let f = Fixture::new();
        let cycle = Cycle::start("/dow", 4, &f.sources(), false).unwrap();
        assert_eq!(cycle.line(), ("/download ".to_owned(), 10));
        let cycle = Cycle::start("/wh big.iso", 3, &f.sources(), false).unwrap();
        assert_eq!(cycle.line(), ("/who big.iso".to_owned(), 4));
    }

    #[test]
    fn nicks_complete_after_user_commands_and_at_signs() {
        let f = Fixture::new();
        assert_eq!(f.tab("/msg b", 2), ["/msg Bea ", "/msg bob "]);
        assert_eq!(f.tab("/mode unicast c", 1), ["/mode unicast carol "]);
        assert_eq!(f.tab("/MODE Unicast b", 1), ["/MODE Unicast Bea "]);
        assert_eq!(f.tab("hi @ca", 1), ["hi @carol "]);
        assert_eq!(f.tab("/sendfile a.txt bo", 1), ["/sendfile a.txt bob "]);
        assert_eq!(f.tab("thanks c", 1), ["thanks carol "]);
    }

    /// Nicks come in the nick list's order: numbers in order.
    #[test]
    fn numbered_nicks_complete_in_the_order_of_the_nick_list() {
        let mut f = Fixture::new();
        f.nicks = strings(&["u10", "U2", "u1", "u11"]);
        assert_eq!(
            f.tab("/msg u", 4),
            ["/msg u1 ", "/msg U2 ", "/msg u10 ", "/msg u11 "]
        );
    }

    /// After `/mode` come its modes (a nick came, as for any word), and a
    /// nick only after `/mode unicast`.
    #[test]
    fn mode_completes_its_modes_then_a_nick_only_after_unicast() {
        let f = Fixture::new();
        assert_eq!(f.tab("/mode ", 2), ["/mode broadcast ", "/mode unicast "]);
        assert_eq!(f.tab("/mode b", 1), ["/mode broadcast "]);
        assert_eq!(f.tab("/Mode U", 1), ["/Mode unicast "]);
        assert!(f.tab("/mode c", 1).is_empty());
        assert!(f.tab("/mode broadcast b", 1).is_empty());
        assert!(f.tab("/mode unicast bob c", 1).is_empty());
    }

    #[test]
    fn a_nick_inside_the_line_is_followed_by_one_space() {
        let f = Fixture::new();
        // Typing on after the completion does not glue the words.
        let mut cycle = Cycle::start("/msg bo", 7, &f.sources(), false).unwrap();
        assert_eq!(cycle.line(), ("/msg bob ".to_owned(), 9));
        cycle.step(false);
        assert_eq!(cycle.line(), ("/msg bob ".to_owned(), 9));
        // Completed in the middle, before a space: no second one.
        let cycle = Cycle::start("@ca how are you", 3, &f.sources(), false).unwrap();
        assert_eq!(cycle.line(), ("@carol how are you".to_owned(), 6));
    }

    #[test]
    fn a_nick_starting_the_line_gets_a_colon() {
        let f = Fixture::new();
        assert_eq!(f.tab("car", 1), ["carol: "]);
        assert_eq!(f.tab("B", 2), ["Bea: ", "bob: "]);
    }

    /// Nicks listed with commas and no space complete each, as irssi's
    /// `bob,car` Tab does.
    #[test]
    fn a_nick_after_a_comma_completes() {
        let f = Fixture::new();
        assert_eq!(f.tab("bob,car", 1), ["bob,carol: "]);
        assert_eq!(f.tab("hi bob,car", 1), ["hi bob,carol "]);
        assert_eq!(f.tab("bob, car", 1), ["bob, carol "]);
        // A shared file's name may have one: it is the whole name.
        let mut f = Fixture::new();
        f.files = strings(&["a,b.txt"]);
        assert_eq!(f.tab("/download a,", 1), ["/download a,b.txt"]);
    }

    #[test]
    fn a_shared_name_that_starts_with_a_blank_completes_in_quotes() {
        let files = ["  notes.txt".to_owned()];
        let sources = Sources {
            files: &files,
            ..Sources::default()
        };
        let (line, _) = Cycle::start("/download ", 10, &sources, false)
            .expect("a candidate")
            .line();
        assert_eq!(line, "/download \"  notes.txt\"");
    }

    #[test]
    fn shared_names_with_spaces_complete_after_download() {
        let f = Fixture::new();
        assert_eq!(f.tab("/download mee", 1), ["/download meeting notes.txt"]);
        assert_eq!(
            f.tab("/download meeting n", 1),
            ["/download meeting notes.txt"]
        );
        assert_eq!(
            f.tab("/download m", 2),
            ["/download meeting notes.txt", "/download Music.mp3"]
        );
        // After an opening quote, within the quotes.
        assert_eq!(
            f.tab("/download \"mee", 1),
            ["/download \"meeting notes.txt\""]
        );
        assert_eq!(f.tab("/get 'b", 1), ["/get 'big.iso'"]);
    }

    #[test]
    fn cancel_completes_transfers_and_help_completes_commands() {
        let f = Fixture::new();
        // Numbers in order, as the transfers rows count them.
        assert_eq!(f.tab("/cancel #", 2), ["/cancel #3", "/cancel #12"]);
        assert_eq!(f.tab("/cancel bi", 1), ["/cancel big.iso"]);
        assert_eq!(f.tab("/help /wh", 1), ["/help /who"]);
        assert_eq!(f.tab("/help m", 2), ["/help mode", "/help msg"]);
        // An offer's id is no nick.
        assert!(f.tab("/accept ", 1).is_empty());
        assert!(f.tab("/DECLINE ", 1).is_empty());
    }

    /// An alias completes what its command does: `/get` the shared
    /// files as `/download`, `/?` the help topics as `/help`; and the
    /// blanks after a command are not part of its argument.
    #[test]
    fn aliases_and_extra_blanks_complete_as_the_command_does() {
        let f = Fixture::new();
        assert_eq!(f.tab("/get mee", 1), ["/get meeting notes.txt"]);
        assert_eq!(f.tab("/GET b", 1), ["/GET big.iso"]);
        assert_eq!(f.tab("/? he", 1), ["/? help"]);
        assert_eq!(f.tab("/download  mee", 1), ["/download  meeting notes.txt"]);
        assert_eq!(f.tab("/mode  u", 1), ["/mode  unicast "]);
        assert_eq!(f.tab("/help   /wh", 1), ["/help   /who"]);
        assert!(completes_files("/get "));
        assert!(completes_files("/Download x"));
        assert!(!completes_files("/getx "));
    }

    /// `/sendfile` completes local paths, as irssi's `/dcc send` does:
    /// names in the folder typed (the home folder for `~/`), a folder's
    /// with a `/` to go on into it, hidden ones only after a dot.
    #[test]
    fn sendfile_completes_local_paths() {
        let dir = tempfile::tempdir().expect("a folder");
        std::fs::create_dir(dir.path().join("my dir")).unwrap();
        std::fs::write(dir.path().join("my dir").join("a file.txt"), "x").unwrap();
        std::fs::write(dir.path().join("notes.md"), "x").unwrap();
        std::fs::create_dir(dir.path().join("Notebook")).unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        let base = format!("{}/", dir.path().display());
        let sorted = |typed: &str, home: Option<&OsStr>| {
            let mut paths = local_paths(typed, home);
            paths.sort();
            paths
        };
        assert_eq!(
            sorted(&format!("{base}no"), None),
            [format!("{base}Notebook/"), format!("{base}notes.md")]
        );
        assert_eq!(
            sorted(&format!("{base}my dir/a"), None),
            [format!("{base}my dir/a file.txt")]
        );
        assert_eq!(sorted(&base, None).len(), 3, "no hidden entry");
        assert_eq!(
            sorted(&format!("{base}."), None),
            [format!("{base}.hidden")]
        );
        let home = Some(dir.path().as_os_str());
        assert_eq!(sorted("~/my", home), ["~/my dir/"]);
        // Within the quotes `/sendfile` takes a path in: a file's closed.
        assert_eq!(
            sorted(&format!("\"{base}my"), None),
            [format!("\"{base}my dir/")]
        );
        assert_eq!(
            sorted(&format!("\"{base}my dir/a"), None),
            [format!("\"{base}my dir/a file.txt\"")]
        );
        assert_eq!(sorted("“~/my dir/", home), ["“~/my dir/a file.txt”"]);
        assert_eq!(sorted("'~/no", home), ["'~/Notebook/", "'~/notes.md'"]);
        assert!(sorted(&format!("\"{base}my dir\" "), None).is_empty());
        assert!(sorted(&format!("{base}nothing/x"), None).is_empty());

        // In the line: after /sendfile or /send, else nicks as before.
        assert_eq!(sendfile_argument("/sendfile  ~/my"), Some("~/my"));
        assert_eq!(sendfile_argument("/SEND a"), Some("a"));
        assert_eq!(sendfile_argument("/msg a"), None);
        let mut f = Fixture::new();
        f.paths = strings(&["notes.md", "Notebook/"]);
        assert_eq!(
            f.tab("/sendfile no", 2),
            ["/sendfile Notebook/", "/sendfile notes.md"]
        );
        assert_eq!(f.tab("/send notes", 1), ["/send notes.md"]);
        f.paths.clear();
        assert_eq!(f.tab("/sendfile a.txt bo", 1), ["/sendfile a.txt bob "]);
    }

    /// `/accept` and `/decline` complete the ids of the offers waiting,
    /// as their rows show them (`/accept 7`).
    #[test]
    fn accept_and_decline_complete_the_offers_waiting() {
        let mut f = Fixture::new();
        f.offers = strings(&["7", "12"]);
        assert_eq!(f.tab("/accept ", 2), ["/accept 7", "/accept 12"]);
        assert_eq!(f.tab("/decline 7", 1), ["/decline 7"]);
        assert!(f.tab("/accept 9", 1).is_empty());
    }

    #[test]
    fn shift_tab_goes_backwards_and_text_after_the_cursor_stays() {
        let f = Fixture::new();
        let line = "b and more";
        let mut cycle = Cycle::start(line, 1, &f.sources(), true).unwrap();
        assert_eq!(cycle.line(), ("bob: and more".into(), 4), "one space");
        cycle.step(true);
        assert_eq!(cycle.line().0, "Bea: and more");
        cycle.step(true);
        assert_eq!(cycle.line().0, "bob: and more");
        cycle.step(false);
        assert_eq!(cycle.line().0, "Bea: and more");
    }
}
