//! The client's command language: one typed line in, one [`Command`] out.

use std::borrow::Cow;

use imchat_core::{FileName, NameError, Recipient, Username};
use thiserror::Error;

/// What plain text (a line that is not a command) is sent as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// To everyone else (the default).
    #[default]
    Broadcast,
    /// To one user.
    Unicast(Username),
}

impl Mode {
    /// Where plain text goes in this mode.
    pub fn recipient(&self) -> Recipient {
        match self {
            Mode::Broadcast => Recipient::Everyone,
            Mode::Unicast(u) => Recipient::User(u.clone()),
        }
    }
}

/// One parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Plain text, sent in the current [`Mode`].
    Text(String),
    /// `/broadcast <text>`: to everyone else, whatever the mode.
    Broadcast(String),
    /// `/unicast <user> <text>`, `/msg`, `@user <text>`: to one user.
    Unicast {
        /// Who.
        to: Username,
        /// What.
        text: String,
    },
    /// `/mode broadcast` or `/mode unicast <user>`.
    SetMode(Mode),
    /// `/mode` alone: show the current mode.
    ShowMode,
    /// `/who`.
    Who,
    /// `/files`: access the shared folder and list it.
    Files,
    /// `/access`: only ask for access (the file count).
    FilesAccess,
    /// `/list`: only list the files.
    ListFiles,
    /// `/download <name>` (the rest of the line is the name).
    Download(FileName),
    /// `/sendfile <path> [user]`.
    SendFile {
        /// Local path, as typed (quotes removed).
        path: String,
        /// One user, or everyone else.
        to: Option<Username>,
        /// When `to` is the last word of an unquoted line: the whole rest
        /// of the line, the path if that word is not an online user (see
        /// [`sendfile_choice`]).
        whole: Option<String>,
    },
    /// `/accept [id]`: take a file someone offers (the only one waiting
    /// when no id is given).
    Accept(Option<u32>),
    /// `/decline [id]`: refuse a file someone offers.
    Decline(Option<u32>),
    /// `/help [command]`: the list, or one command (its canonical name).
    Help(Option<&'static str>),
    /// `/transfers`: the running transfers.
    Transfers,
    /// `/cancel <id|name>`: stops a transfer.
    Cancel(String),
    /// `/clear`: empties the chat pane.
    Clear,
    /// `/nicklist`: shows or hides the list of who is online.
    NickList,
    /// `/me <action>`: an action, sent in the current [`Mode`] (`* alice waves`).
    Me(String),
    /// `/quit [reason]`, `/exit [reason]`: leave, with a parting text the others see.
    Quit(String),
    /// `/ignore <user>`: hear no more from `user` (its chat and file
    /// offers are dropped); `/ignore` alone lists who is ignored.
    Ignore(Option<Username>),
    /// `/unignore <user>`: hear `user` again.
    Unignore(Username),
    /// `/register`: protect the username with a password.
    Register,
    /// `/unregister`: remove the protection of the username.
    Unregister,
    /// `/kick <user> [reason]`, `/ban <user|address> [reason]`,
    /// `/unban <user|address>`, `/bans`: an operator's request.
    Operate {
        /// What.
        action: imchat_core::OpAction,
        /// A username or an address (empty for `/bans`).
        target: String,
        /// Why (may be empty).
        reason: String,
    },
    /// An empty line.
    Nothing,
}

/// A line that looked like a command but was not a valid one. Show it; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// An unknown `/word`, and the nearest command if one is close; a
    /// word that looks like a file name (`/notes.txt`, the classroom
    /// programs' download) gets the `/download` line too.
    #[error("unknown command /{word}; {}{}", match suggestion {
        Some(s) => format!("did you mean /{s}?"),
        None => "type /help for the list".to_string(),
    }, match download {
        Some(name) => format!("; to download a shared file: /download {name}"),
        None => String::new(),
    })]
    Unknown {
        /// The word typed (lowercased).
        word: String,
        /// The nearest command or alias, within two edits.
        suggestion: Option<&'static str>,
        /// The rest of the line as typed, when the word has a dot and it
        /// is a valid file name.
        download: Option<String>,
    },
    /// A command other chat programs have that imchat does the other
    /// way, or not at all: what to do instead.
    #[error("imchat has no /{word}: {hint}")]
    Elsewhere {
        /// The word typed (lowercased).
        word: String,
        /// What to do in imchat.
        hint: &'static str,
    },
    /// `/help` on a word that is no command: the command it likely
    /// means, or the list of those there is help on. (The nearest command
    /// within two edits, as for a mistyped command, would take a user's
    /// name, `/help bob`, for `/ban`.)
    #[error("no help for {topic}; {}", match suggestion {
        Some(s) => format!("did you mean /help {s}?"),
        None => format!("the topics are the commands: {}", help_topics().join(", ")),
    })]
    NoHelp {
        /// The word typed (lowercased).
        topic: String,
        /// The command one typo away, or the only one it starts.
        suggestion: Option<&'static str>,
    },
    /// A `/` with no command name right after it (`/`, `/ hello`).
    #[error("no command name right after /; type /help for the list, or // to send text that starts with /")]
    NoCommandName,
    /// A command without what it needs.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// A bad user name in a command.
    #[error("invalid username: {0}")]
    BadUser(NameError),
    /// `@all` or `@everyone` (other chat programs' way to call the whole
    /// room): no user has that name, and a plain line goes to everyone.
    #[error("'{0}' is not a user: a plain line already goes to everyone (in unicast mode, /broadcast <text>)")]
    AtEveryone(String),
    /// A bad file name in a command.
    #[error("invalid file name: {0}")]
    BadFile(NameError),
    /// A path given to `/download`, which takes a shared file's name.
    #[error("'{0}' is a path: /download takes the name of a shared file, as /list shows it")]
    DownloadPath(String),
}

/// One command (or a pair documented together) for `/help` and completion.
pub struct CommandInfo {
    /// The names it runs under (without `/`), the first one canonical.
    pub names: &'static [&'static str],
    /// Other names for it: typos people make, other clients' words.
    pub aliases: &'static [&'static str],
    /// Usage and description, one pair per help row.
    pub rows: &'static [(&'static str, &'static str)],
}

/// Commands of other chat programs (IRC's, mostly) that imchat does
/// another way, and what to do instead: said instead of a typo's nearest
/// command (`/nick` is not a mistyped `/kick`).
const ELSEWHERE: &[(&[&str], &str)] = &[
    (
        &["nick", "name"],
        "a name is chosen when connecting; /quit and connect again with another",
    ),
    (
        &["join", "part", "leave", "channel", "channels"],
        "everyone connected is in one room; /msg NAME TEXT talks to one user",
    ),
    (
        &["query", "whisper", "privmsg"],
        "/msg NAME TEXT sends one message, /mode unicast NAME sends them all",
    ),
    (&["names", "whois"], "/who lists who is online"),
    (&["topic"], "the room has no topic"),
];

/// What to do instead of `word`, a command of other chat programs.
fn elsewhere(word: &str) -> Option<&'static str> {
    ELSEWHERE
        .iter()
        .find(|(words, _)| words.contains(&word))
        .map(|(_, hint)| *hint)
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        names: &["broadcast"],
        aliases: &["boardcast", "all"],
        rows: &[("/broadcast <text>", "send to everyone else")],
    },
    CommandInfo {
        names: &["unicast"],
        aliases: &["msg", "tell", "w"],
        rows: &[(
            "/unicast <user> <text>",
            "send to one user (also @user <text>, or /user <text> for an online user)",
        )],
    },
    CommandInfo {
        names: &["mode"],
        aliases: &[],
        rows: &[
            ("/mode broadcast", "plain text goes to everyone (default)"),
            (
                "/mode unicast <user>",
                "plain text goes to <user>, who must be online",
            ),
            ("/mode", "where plain text goes now"),
        ],
    },
    CommandInfo {
        names: &["who"],
        aliases: &["users"],
        rows: &[("/who", "who is online")],
    },
    CommandInfo {
        names: &["files"],
        aliases: &["file", "downloads"],
        rows: &[("/files", "access the shared folder: file count and list")],
    },
    CommandInfo {
        names: &["access", "list"],
        aliases: &[],
        rows: &[("/access, /list", "only the count, only the list")],
    },
    CommandInfo {
        names: &["download"],
        aliases: &["get"],
        rows: &[(
            "/download <name>",
            "download a shared file into your download folder (an interrupted one resumes)",
        )],
    },
    CommandInfo {
        names: &["sendfile"],
        aliases: &["send"],
        rows: &[(
            "/sendfile <path> [user]",
            "push a local file to everyone else, or to one user; the path is the rest of the line, unless its last word is an online user (quotes optional)",
        )],
    },
    CommandInfo {
        names: &["accept"],
        aliases: &[],
        rows: &[(
            "/accept [id]",
            "take a file someone offers you (the one waiting, or #id)",
        )],
    },
    CommandInfo {
        names: &["decline"],
        aliases: &[],
        rows: &[("/decline [id]", "refuse a file someone offers you")],
    },
    CommandInfo {
        names: &["transfers"],
        aliases: &[],
        rows: &[("/transfers", "the running transfers")],
    },
    CommandInfo {
        names: &["cancel"],
        aliases: &[],
        rows: &[(
            "/cancel <id|name>",
            "stop a transfer; a download's .part stays, so /download resumes it",
        )],
    },
    CommandInfo {
        names: &["me"],
        aliases: &[],
        rows: &[(
            "/me <action>",
            "an action, sent in the current mode: * you <action>",
        )],
    },
    CommandInfo {
        names: &["ignore", "unignore"],
        aliases: &[],
        rows: &[
            (
                "/ignore <user>",
                "hear no more from <user> (its messages and file offers), until /unignore or the client ends",
            ),
            ("/ignore", "who you ignore"),
            ("/unignore <user>", "hear <user> again"),
        ],
    },
    CommandInfo {
        names: &["clear"],
        aliases: &[],
        rows: &[("/clear", "empty the chat pane")],
    },
    CommandInfo {
        names: &["nicklist"],
        aliases: &[],
        rows: &[(
            "/nicklist",
            "show or hide the list of who is online (full screen only)",
        )],
    },
    CommandInfo {
        names: &["register", "unregister"],
        aliases: &[],
        rows: &[
            (
                "/register",
                "protect your username with a password (asked twice, not shown)",
            ),
            ("/unregister", "remove that protection"),
        ],
    },
    CommandInfo {
        names: &["kick", "ban", "unban", "bans"],
        aliases: &[],
        rows: &[
            ("/kick <user> [why]", "operators: disconnect a user"),
            (
                "/ban <user|addr> [why]",
                "operators: refuse a username or an address from now on",
            ),
            ("/unban <user|addr>", "operators: lift a ban"),
            ("/bans", "operators: list the bans"),
        ],
    },
    CommandInfo {
        names: &["help"],
        aliases: &["?"],
        rows: &[(
            "/help [command]",
            "this list, or one command's usage and aliases",
        )],
    },
    CommandInfo {
        names: &["quit"],
        aliases: &["exit"],
        rows: &[(
            "/quit [reason]",
            "leave, with a parting text for the others",
        )],
    },
];

/// The first line of `/help`.
const HELP_HEADING: &str =
    "Commands (plain text is sent in the current mode, broadcast by default):";

/// Every command name and alias with its `/`, for completion.
pub fn names() -> Vec<String> {
    COMMANDS
        .iter()
        .flat_map(|c| c.names.iter().chain(c.aliases))
        .map(|n| format!("/{n}"))
        .collect()
}

/// The command `word` (a name or an alias, without `/`, any case) belongs to.
pub fn lookup(word: &str) -> Option<&'static CommandInfo> {
    let word = word.trim_start_matches('/').to_lowercase();
    COMMANDS
        .iter()
        .find(|c| c.names.iter().chain(c.aliases).any(|n| *n == word))
}

/// The command name or alias nearest to `word` (a mistyped command), if
/// one is within two edits and not the whole word away.
pub fn suggest(word: &str) -> Option<&'static str> {
    let len = word.chars().count();
    let aliases = COMMANDS
        .iter()
        .flat_map(|c| c.aliases.iter().map(|n| (n, true)));
    COMMANDS
        .iter()
        .flat_map(|c| c.names.iter().map(|n| (n, false)))
        .chain(aliases)
        .map(|(n, alias)| (strsim::osa_distance(word, n), *n, alias))
        .filter(|(d, _, _)| *d <= 2 && *d < len)
        // At the same distance, a command the word begins (`/wh`: `/who`,
        // not the alias `/w`), then a command's name before an alias
        // (`/wo`: `/who`).
        .min_by_key(|(d, n, alias)| (*d, !n.starts_with(word), *alias))
        .map(|(_, n, _)| n)
}

/// The topic of `/help`'s arguments: its first word, less the one `/`
/// in front that is the command's own (`/help /msg`); a second is no
/// command's (`/help //` asks for no topic, not for the list).
fn help_topic(args: &str) -> &str {
    let word = split_word(args).0;
    word.strip_prefix('/').unwrap_or(word)
}

/// The commands there is help on, by their names (not the aliases).
fn help_topics() -> Vec<&'static str> {
    COMMANDS
        .iter()
        .flat_map(|c| c.names.iter().copied())
        .collect()
}

/// The command `/help topic` likely means: the only one whose name
/// starts with `topic`, else one a typo away ([`one_typo_from_command`]).
fn help_suggestion(topic: &str) -> Option<&'static str> {
    let mut starting = help_topics().into_iter().filter(|n| n.starts_with(topic));
    match (starting.next(), starting.next()) {
        (Some(only), None) if !topic.is_empty() => Some(only),
        _ => one_typo_from_command(topic),
    }
}

/// The command name or alias one typo (an edit or a swap of two letters)
/// away from `word`, of three letters or more: `/mgs` for `/msg`.
pub fn one_typo_from_command(word: &str) -> Option<&'static str> {
    let word = word.to_lowercase();
    if word.chars().count() < 3 {
        return None;
    }
    COMMANDS
        .iter()
        .flat_map(|c| c.names.iter().chain(c.aliases))
        .find(|n| strsim::osa_distance(&word, n) == 1)
        .copied()
}

/// `rest` (a line without its `/`) as a file name to `/download`, when its
/// first word has a dot (`/demofile.txt`: the classroom programs' way to
/// download) and the whole is a valid file name.
fn looks_like_a_file(rest: &str) -> Option<String> {
    let (word, _) = split_word(rest);
    let name = unquote(rest);
    (word.contains('.') && FileName::new(name).is_ok()).then(|| name.to_string())
}

/// Splits `text` into lines of at most `width` characters, at spaces where
/// it can (a word longer than the width is cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word: Vec<char> = word.chars().collect();
        let used = line.chars().count();
        if used > 0 && used + 1 + word.len() <= width {
            line.push(' ');
            line.extend(&word);
            continue;
        }
        if used > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > width {
            lines.push(word.drain(..width).collect());
        }
        line.extend(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` wrapped to `width`, every line after `indent`.
fn indented(text: &str, indent: usize, width: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    wrap(text, width.saturating_sub(indent))
        .into_iter()
        .map(|l| format!("{pad}{l}"))
        .collect()
}

/// The `/help` text for a terminal `width` columns wide (no line is wider):
/// the whole list and the aliases, or one command's usage and aliases.
/// Descriptions go beside the usage when there is room, else under it.
pub fn help_lines(width: usize, command: Option<&str>) -> Vec<String> {
    let width = width.max(12);
    if let Some(info) = command.and_then(lookup) {
        let mut out = Vec::new();
        for (usage, about) in info.rows {
            out.extend(indented(usage, 0, width));
            out.extend(indented(about, 4, width));
        }
        if !info.aliases.is_empty() {
            let aliases: Vec<String> = info.aliases.iter().map(|a| format!("/{a}")).collect();
            out.extend(indented(
                &format!("aliases: {}", aliases.join(" ")),
                0,
                width,
            ));
        }
        return out;
    }
    let usage_width = COMMANDS
        .iter()
        .flat_map(|c| c.rows.iter())
        .map(|(u, _)| u.len())
        .max()
        .unwrap_or(0);
    let column = 2 + usage_width + 2;
    let mut out = wrap(HELP_HEADING, width);
    for (usage, about) in COMMANDS.iter().flat_map(|c| c.rows.iter()) {
        if width >= column + 20 {
            let mut about = wrap(about, width - column).into_iter();
            let first = about.next().unwrap_or_default();
            out.push(format!("  {usage:<usage_width$}  {first}"));
            out.extend(about.map(|l| format!("{:column$}{l}", "")));
        } else {
            out.extend(indented(usage, 2, width));
            out.extend(indented(about, 6, width));
        }
    }
    let aliases: Vec<String> = COMMANDS
        .iter()
        .flat_map(|c| c.aliases.iter())
        .map(|a| format!("/{a}"))
        .chain(["@user".to_string()])
        .collect();
    out.extend(wrap(&format!("aliases: {}", aliases.join(" ")), width));
    out.extend(wrap(
        "/help <command> shows one command's usage and aliases",
        width,
    ));
    out
}

/// Commands that work without a connection (they only touch this client).
pub fn works_offline(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Nothing
            | Command::Quit(_)
            | Command::Help(_)
            | Command::Clear
            | Command::NickList
            | Command::Transfers
            | Command::ShowMode
            | Command::SetMode(Mode::Broadcast)
    )
}

fn user(s: &str) -> Result<Username, CommandError> {
    Username::new(s).map_err(CommandError::BadUser)
}

/// The usage line of a command that takes no argument, under any of its
/// names (`None` for the others): words after it are refused with it.
fn bare_usage(word: &str) -> Option<&'static str> {
    Some(match word {
        "who" | "users" => "/who",
        "files" | "file" | "downloads" => "/files",
        "access" => "/access",
        "list" => "/list",
        "transfers" => "/transfers",
        "clear" => "/clear",
        "nicklist" => "/nicklist",
        // A password typed on the line would show on the screen and stay
        // in the input history: it is asked for, hidden.
        "register" => {
            "/register alone: the password is asked for, hidden (never type it on the line)"
        }
        "unregister" => "/unregister alone",
        "bans" => "/bans",
        _ => return None,
    })
}

/// The first word of `s` and the text after it and the one blank that
/// ends it: a message's own leading blanks (an indented line of code
/// pasted after `/msg bob `) are its own, as irssi keeps them.
fn split_text(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.char_indices().find(|(_, c)| c.is_whitespace()) {
        Some((i, blank)) => (&s[..i], &s[i + blank.len_utf8()..]),
        None => (s, ""),
    }
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// When plain `text` (sent as chat) is one of the classroom programs'
/// bare commands (`exit`, `access server files`, `list server files`,
/// `download <file>`): a note that it went out as chat, and the command
/// that does it here. Plain words stay chat text; the note keeps a user
/// of those programs from waiting for a command that did not run.
pub fn classroom_hint(text: &str) -> Option<String> {
    let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let instead = match words.as_slice() {
        ["exit"] | ["quit"] => "to leave, type /quit".to_owned(),
        ["access", "server", "files"] => "for the shared folder, type /files".to_owned(),
        ["list", "server", "files"] => "to list the shared files, type /files".to_owned(),
        // One word with a dot, as the programs' `download image1.png`:
        // more words are likelier chat about downloading.
        ["download", _] => {
            let name = text.split_whitespace().nth(1).unwrap_or_default();
            if !name.contains('.') || FileName::new(name).is_err() {
                return None;
            }
            format!("to download it, type /download {name}")
        }
        _ => return None,
    };
    Some(format!("(sent as chat: {instead})"))
}

/// A shared file's name as it is typed after `/download` to mean that
/// file: in double quotes when [`unquote`] would otherwise change it (a
/// name that starts or ends with a blank, or is itself in quotes), as it
/// is. File names hold no `"`, so the quotes cannot be misread.
pub fn typed_file_name(name: &str) -> Cow<'_, str> {
    if unquote(name) == name {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("\"{name}\""))
    }
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// The quotes a `/sendfile` path may be in, opening and closing: straight
/// ones, and the typographic ones a word processor puts in a copied
/// command (a classroom README's `/SendFile “filename”`).
pub const PATH_QUOTES: [(char, char); 4] = [('"', '"'), ('\'', '\''), ('“', '”'), ('‘', '’')];

/// Splits `/sendfile` arguments into a path, an optional user, and the
/// whole rest of the line when it could be the path too: a quoted path may
/// hold spaces and a user may follow it; unquoted, the last of two words
/// or more is a user if it is a valid name, the whole line the other
/// reading (which [`sendfile_choice`] picks from). A leading `--` word
/// ends the options as in a shell, for a path starting with `-`.
fn sendfile_args(rest: &str) -> Result<(String, Option<Username>, Option<String>), CommandError> {
    const USAGE: &str = "/sendfile <path> [user]";
    let rest = rest.trim();
    let rest = match rest.strip_prefix("--") {
        Some(after) if after.starts_with(char::is_whitespace) => after.trim_start(),
        _ => rest,
    };
    if rest.is_empty() {
        return Err(CommandError::Usage(USAGE));
    }
    for (open, close) in PATH_QUOTES {
        if let Some(body) = rest.strip_prefix(open) {
            let end = match body.find(close) {
                Some(end) => end,
                // An unclosed typographic quote is part of the name.
                None if !open.is_ascii() => break,
                None => return Err(CommandError::Usage(USAGE)),
            };
            let path = &body[..end];
            let after = body[end + close.len_utf8()..].trim();
            let to = if after.is_empty() {
                None
            } else {
                Some(user(after)?)
            };
            if path.is_empty() {
                return Err(CommandError::Usage(USAGE));
            }
            return Ok((path.to_string(), to, None));
        }
    }
    match rest.rsplit_once(char::is_whitespace) {
        Some((path, last)) => match Username::new(last) {
            Ok(to) => Ok((path.trim().to_string(), Some(to), Some(rest.to_string()))),
            Err(_) => Ok((rest.to_string(), None, None)),
        },
        None => Ok((rest.to_string(), None, None)),
    }
}

/// The path and user an unquoted `/sendfile a b` means, from its two
/// readings: `path` to the user `to` (its last word), or the `whole` line
/// as the path, to everyone. The split wins when `to` is an online user
/// and `path` exists; else an existing `whole`; else the split when `to`
/// is online or `path` exists (its error then says what is wrong); else
/// the whole line, as `/download` takes it. `online` is asked at most once.
pub fn sendfile_choice(
    path: String,
    to: Option<Username>,
    whole: Option<String>,
    online: impl FnOnce(&Username) -> bool,
    exists: impl Fn(&str) -> bool,
) -> (String, Option<Username>) {
    let (Some(user), Some(whole)) = (&to, whole) else {
        return (path, to);
    };
    let online = online(user);
    if online && exists(&path) {
        return (path, to);
    }
    if exists(&whole) {
        return (whole, None);
    }
    if online || exists(&path) {
        return (path, to);
    }
    (whole, None)
}

impl Command {
    /// Parses one input line (without its newline). Commands are
    /// case-insensitive; a line starting with `//` sends the text from the
    /// second `/` on, so a message may start with a slash.
    pub fn parse(line: &str) -> Result<Command, CommandError> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Ok(Command::Nothing);
        }
        if let Some(text) = line.strip_prefix("//") {
            return Ok(Command::Text(format!("/{text}")));
        }
        if let Some(rest) = line.strip_prefix('@') {
            let (to, text) = split_text(rest);
            // `@bob: hi`, `@bob, hi`: a nick addressed as on IRC. No name
            // ends so (neither is allowed in one), so it is bob's.
            let to = to.strip_suffix([':', ',']).unwrap_or(to);
            if to.is_empty() || text.trim().is_empty() {
                return Err(CommandError::Usage("@user <text>"));
            }
            if ["all", "everyone"].contains(&to.to_lowercase().as_str()) {
                return Err(CommandError::AtEveryone(to.to_string()));
            }
            return Ok(Command::Unicast {
                to: user(to)?,
                text: text.to_string(),
            });
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Ok(Command::Text(line.to_string()));
        };
        // `/ hello` is no `/hello`, nor `/ /` a `//`.
        if rest.is_empty() || rest.starts_with(char::is_whitespace) {
            return Err(CommandError::NoCommandName);
        }
        let (word, args) = split_word(rest);
        let word = word.to_lowercase();
        // Words after a command that takes none may be a message typed
        // after it: refused, not dropped in silence.
        if !args.trim().is_empty() {
            if let Some(usage) = bare_usage(&word) {
                return Err(CommandError::Usage(usage));
            }
        }
        let cmd = match word.as_str() {
            "broadcast" | "boardcast" | "all" => {
                let (_, text) = split_text(rest);
                if text.trim().is_empty() {
                    return Err(CommandError::Usage("/broadcast <text>"));
                }
                Command::Broadcast(text.to_string())
            }
            "unicast" | "msg" | "tell" | "w" => {
                let (to, text) = split_text(args);
                if to.is_empty() || text.trim().is_empty() {
                    return Err(CommandError::Usage("/unicast <user> <text>"));
                }
                Command::Unicast {
                    to: user(to)?,
                    text: text.to_string(),
                }
            }
            "mode" => {
                let (m, who) = split_word(args);
                let who = who.trim();
                match m.to_lowercase().as_str() {
                    "" => Command::ShowMode,
                    "broadcast" | "boardcast" if who.is_empty() => {
                        Command::SetMode(Mode::Broadcast)
                    }
                    "unicast" if !who.is_empty() && !who.contains(char::is_whitespace) => {
                        Command::SetMode(Mode::Unicast(user(who)?))
                    }
                    _ => {
                        return Err(CommandError::Usage(
                            "/mode broadcast | /mode unicast <user>",
                        ))
                    }
                }
            }
            "who" | "users" => Command::Who,
            "files" | "file" | "downloads" => Command::Files,
            "access" => Command::FilesAccess,
            "list" => Command::ListFiles,
            "download" | "get" => {
                let name = unquote(args);
                if name.is_empty() {
                    return Err(CommandError::Usage("/download <name>"));
                }
                // The shared folder is flat: a name with a folder is a
                // path (`../etc/passwd`), whatever else is wrong with it.
                if name.contains(['/', '\\']) {
                    return Err(CommandError::DownloadPath(name.to_string()));
                }
                Command::Download(FileName::new(name).map_err(CommandError::BadFile)?)
            }
            "sendfile" | "send" => {
                let (path, to, whole) = sendfile_args(args)?;
                Command::SendFile { path, to, whole }
            }
            "accept" | "decline" => {
                let id = match args.trim().trim_start_matches('#') {
                    "" => None,
                    n => Some(n.parse::<u32>().map_err(|_| {
                        CommandError::Usage(if word == "accept" {
                            "/accept [id]"
                        } else {
                            "/decline [id]"
                        })
                    })?),
                };
                if word == "accept" {
                    Command::Accept(id)
                } else {
                    Command::Decline(id)
                }
            }
            // The first word is the topic (`/help msg bob hi`: /msg's).
            "help" | "?" => match help_topic(args) {
                "" => Command::Help(None),
                // `@user <text>`, listed with the aliases.
                topic if topic.starts_with('@') => Command::Help(Some("unicast")),
                topic => match lookup(topic) {
                    Some(info) => Command::Help(Some(info.names[0])),
                    None => {
                        let topic = topic.to_lowercase();
                        return Err(CommandError::NoHelp {
                            suggestion: help_suggestion(&topic),
                            topic,
                        });
                    }
                },
            },
            "transfers" => Command::Transfers,
            "cancel" => {
                let what = unquote(args);
                if what.is_empty() {
                    return Err(CommandError::Usage("/cancel <id|name>"));
                }
                Command::Cancel(what.to_string())
            }
            "clear" => Command::Clear,
            "nicklist" => Command::NickList,
            "me" => {
                if args.trim().is_empty() {
                    return Err(CommandError::Usage("/me <action>"));
                }
                Command::Me(args.to_string())
            }
            "quit" | "exit" => Command::Quit(args.trim().to_string()),
            "ignore" => match args.trim() {
                "" => Command::Ignore(None),
                who if !who.contains(char::is_whitespace) => Command::Ignore(Some(user(who)?)),
                _ => return Err(CommandError::Usage("/ignore <user>")),
            },
            "unignore" => match args.trim() {
                who if !who.is_empty() && !who.contains(char::is_whitespace) => {
                    Command::Unignore(user(who)?)
                }
                _ => return Err(CommandError::Usage("/unignore <user>")),
            },
            "register" => Command::Register,
            "unregister" => Command::Unregister,
            "kick" | "ban" | "unban" | "bans" => {
                let (action, target, reason) =
                    imchat_core::parse_operator_line(&format!("{word} {args}")).map_err(|_| {
                        CommandError::Usage(match word.as_str() {
                            "kick" => "/kick <user> [reason]",
                            "ban" => "/ban <user|address> [reason]",
                            _ => "/unban <user|address>",
                        })
                    })?;
                Command::Operate {
                    action,
                    target,
                    reason,
                }
            }
            _ => {
                if let Some(hint) = elsewhere(&word) {
                    return Err(CommandError::Elsewhere { word, hint });
                }
                return Err(CommandError::Unknown {
                    suggestion: suggest(&word),
                    download: looks_like_a_file(rest),
                    word,
                });
            }
        };
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Username {
        Username::new(s).unwrap()
    }

    #[test]
    fn a_password_typed_after_register_is_refused_not_dropped() {
        for line in ["/register hunter2", "/REGISTER  pw", "/unregister pw"] {
            assert!(
                matches!(Command::parse(line), Err(CommandError::Usage(_))),
                "{line}"
            );
        }
        assert_eq!(Command::parse("/register  "), Ok(Command::Register));
        assert_eq!(Command::parse("/unregister"), Ok(Command::Unregister));
    }

    #[test]
    fn ignore_takes_one_user_or_none() {
        let bob = Username::new("bob").unwrap();
        assert_eq!(Command::parse("/ignore"), Ok(Command::Ignore(None)));
        assert_eq!(
            Command::parse("/IGNORE  bob "),
            Ok(Command::Ignore(Some(bob.clone())))
        );
        assert_eq!(Command::parse("/unignore bob"), Ok(Command::Unignore(bob)));
        for line in ["/ignore bob carol", "/unignore", "/unignore bob carol"] {
            assert!(
                matches!(Command::parse(line), Err(CommandError::Usage(_))),
                "{line}"
            );
        }
        assert!(matches!(
            Command::parse("/ignore b@d"),
            Err(CommandError::BadUser(_))
        ));
    }

    #[test]
    fn account_and_operator_commands_parse() {
        use imchat_core::OpAction;
        assert_eq!(Command::parse("/register"), Ok(Command::Register));
        assert_eq!(Command::parse("/unregister"), Ok(Command::Unregister));
        assert_eq!(
            Command::parse("/kick bob too loud"),
            Ok(Command::Operate {
                action: OpAction::Kick,
                target: "bob".into(),
                reason: "too loud".into(),
            })
        );
        assert_eq!(
            Command::parse("/ban 10.0.0.7"),
            Ok(Command::Operate {
                action: OpAction::Ban,
                target: "10.0.0.7".into(),
                reason: String::new(),
            })
        );
        assert_eq!(
            Command::parse("/bans"),
            Ok(Command::Operate {
                action: OpAction::Bans,
                target: String::new(),
                reason: String::new(),
            })
        );
        assert_eq!(
            Command::parse("/kick"),
            Err(CommandError::Usage("/kick <user> [reason]"))
        );
        assert_eq!(
            Command::parse("/unban"),
            Err(CommandError::Usage("/unban <user|address>"))
        );
    }

    #[test]
    fn lines_parse_to_commands() {
        let cases: Vec<(&str, Command)> = vec![
            ("hello there", Command::Text("hello there".into())),
            ("", Command::Nothing),
            ("   ", Command::Nothing),
            ("//slash", Command::Text("/slash".into())),
            ("/broadcast hi all", Command::Broadcast("hi all".into())),
            ("/boardcast hi", Command::Broadcast("hi".into())),
            ("/BROADCAST hi", Command::Broadcast("hi".into())),
            (
                "/unicast bob hi you",
                Command::Unicast {
                    to: u("bob"),
                    text: "hi you".into(),
                },
            ),
            (
                "/msg bob hi",
                Command::Unicast {
                    to: u("bob"),
                    text: "hi".into(),
                },
            ),
            (
                "@bob hi",
                Command::Unicast {
                    to: u("bob"),
                    text: "hi".into(),
                },
            ),
            (
                "@bob: hi",
                Command::Unicast {
                    to: u("bob"),
                    text: "hi".into(),
                },
            ),
            (
                "@bob, hi there",
                Command::Unicast {
                    to: u("bob"),
                    text: "hi there".into(),
                },
            ),
            ("/mode broadcast", Command::SetMode(Mode::Broadcast)),
            (
                "/mode unicast bob",
                Command::SetMode(Mode::Unicast(u("bob"))),
            ),
            ("/mode", Command::ShowMode),
            ("/who", Command::Who),
            ("/files", Command::Files),
            ("/file", Command::Files),
            ("/downloads", Command::Files),
            ("/access", Command::FilesAccess),
            ("/list", Command::ListFiles),
            (
                "/download meeting notes.txt",
                Command::Download(FileName::new("meeting notes.txt").unwrap()),
            ),
            (
                "/download \"a b.png\"",
                Command::Download(FileName::new("a b.png").unwrap()),
            ),
            (
                "/sendfile x.txt",
                Command::SendFile {
                    path: "x.txt".into(),
                    to: None,
                    whole: None,
                },
            ),
            (
                "/sendfile ./dir/x.txt bob",
                Command::SendFile {
                    path: "./dir/x.txt".into(),
                    to: Some(u("bob")),
                    whole: Some("./dir/x.txt bob".into()),
                },
            ),
            (
                "/SendFile \"my file.txt\"",
                Command::SendFile {
                    path: "my file.txt".into(),
                    to: None,
                    whole: None,
                },
            ),
            (
                "/sendfile \"my file.txt\" bob",
                Command::SendFile {
                    path: "my file.txt".into(),
                    to: Some(u("bob")),
                    whole: None,
                },
            ),
            (
                "/SendFile “my file.txt”",
                Command::SendFile {
                    path: "my file.txt".into(),
                    to: None,
                    whole: None,
                },
            ),
            (
                "/sendfile ‘my file.txt’ bob",
                Command::SendFile {
                    path: "my file.txt".into(),
                    to: Some(u("bob")),
                    whole: None,
                },
            ),
            (
                "/sendfile “unclosed.txt",
                Command::SendFile {
                    path: "“unclosed.txt".into(),
                    to: None,
                    whole: None,
                },
            ),
            ("/help", Command::Help(None)),
            ("/help download", Command::Help(Some("download"))),
            ("/help /msg", Command::Help(Some("unicast"))),
            ("/HELP List", Command::Help(Some("access"))),
            ("/transfers", Command::Transfers),
            ("/cancel #3", Command::Cancel("#3".into())),
            (
                "/cancel \"big file.bin\"",
                Command::Cancel("big file.bin".into()),
            ),
            ("/clear", Command::Clear),
            ("/nicklist", Command::NickList),
            ("/quit", Command::Quit(String::new())),
            ("/exit", Command::Quit(String::new())),
            ("/quit  off to lunch ", Command::Quit("off to lunch".into())),
            ("/me waves", Command::Me("waves".into())),
            ("/ME  bows deeply", Command::Me("bows deeply".into())),
        ];
        for (line, want) in cases {
            assert_eq!(Command::parse(line), Ok(want), "{line:?}");
        }
    }

    #[test]
    fn sendfile_takes_the_rest_of_the_line_unless_it_ends_with_an_online_user() {
        // What `/sendfile <rest>` sends, `bob` online, `files` existing.
        let sent = |rest: &str, files: &[&str]| {
            let Ok(Command::SendFile { path, to, whole }) =
                Command::parse(&format!("/sendfile {rest}"))
            else {
                panic!("{rest}: not a /sendfile");
            };
            let (path, to) = sendfile_choice(
                path,
                to,
                whole,
                |u| u.as_str() == "bob",
                |p| files.contains(&p),
            );
            (path, to.map(|u| u.as_str().to_owned()))
        };
        let to = |path: &str, user: Option<&str>| (path.to_owned(), user.map(str::to_owned));
        // A name with a space, unquoted: no user split off.
        assert_eq!(
            sent("my file.txt", &["my file.txt"]),
            to("my file.txt", None)
        );
        assert_eq!(sent("my file.txt", &[]), to("my file.txt", None));
        assert_eq!(
            sent("my file.txt bob", &["my file.txt"]),
            to("my file.txt", Some("bob"))
        );
        // Not a valid name as its last word: the whole line.
        assert_eq!(sent("a (1).txt", &[]), to("a (1).txt", None));
        // An existing file named by the whole line wins over an offline
        // user; an online one wins when the path before it exists.
        assert_eq!(
            sent("notes carol", &["notes carol", "notes"]),
            to("notes carol", None)
        );
        assert_eq!(
            sent("notes bob", &["notes bob", "notes"]),
            to("notes", Some("bob"))
        );
        assert_eq!(sent("notes bob", &["notes bob"]), to("notes bob", None));
        // Neither exists: to the online user (the error names the path);
        // an offline user with an existing path: the server says so.
        assert_eq!(sent("gone.txt bob", &[]), to("gone.txt", Some("bob")));
        assert_eq!(sent("x.txt carol", &["x.txt"]), to("x.txt", Some("carol")));
        // `--` ends the options, as in a shell.
        assert_eq!(sent("-- -rf.txt", &[]), to("-rf.txt", None));
        assert_eq!(
            sent("-- -rf.txt bob", &["-rf.txt"]),
            to("-rf.txt", Some("bob"))
        );
        assert_eq!(sent("--", &[]), to("--", None));
        let help = help_lines(80, Some("sendfile")).join(" ");
        let help: Vec<&str> = help.split_whitespace().collect();
        assert!(help.join(" ").contains("rest of the line"), "{help:?}");
    }

    #[test]
    fn accept_and_decline_take_an_optional_offer_id() {
        let cases: Vec<(&str, Command)> = vec![
            ("/accept", Command::Accept(None)),
            ("/accept 3", Command::Accept(Some(3))),
            ("/ACCEPT #12", Command::Accept(Some(12))),
            ("/decline", Command::Decline(None)),
            ("/decline  7 ", Command::Decline(Some(7))),
        ];
        for (line, want) in cases {
            assert_eq!(Command::parse(line), Ok(want), "{line:?}");
        }
        assert_eq!(
            Command::parse("/accept x.iso"),
            Err(CommandError::Usage("/accept [id]"))
        );
        assert_eq!(
            Command::parse("/decline -1"),
            Err(CommandError::Usage("/decline [id]"))
        );
        let help = help_lines(80, None).join("\n");
        assert!(help.contains("/accept [id]") && help.contains("/decline [id]"));
    }

    #[test]
    fn me_needs_an_action() {
        assert_eq!(
            Command::parse("/me"),
            Err(CommandError::Usage("/me <action>"))
        );
    }

    #[test]
    fn the_mode_decides_where_plain_text_goes() {
        assert_eq!(Mode::default().recipient(), Recipient::Everyone);
        assert_eq!(
            Mode::Unicast(u("carol")).recipient(),
            Recipient::User(u("carol"))
        );
    }

    /// A message's own leading blanks, after the one that ends the
    /// user's name, are kept: an indented line of code sent to bob.
    #[test]
    fn a_private_message_keeps_its_own_leading_blanks() {
        let unicast = |text: &str| {
            Ok(Command::Unicast {
                to: u("bob"),
                text: text.into(),
            })
        };
        assert_eq!(
            Command::parse("/msg bob     fn main() {"),
            unicast("    fn main() {")
        );
        assert_eq!(Command::parse("@bob   x"), unicast("  x"));
        assert_eq!(Command::parse("/msg bob hi"), unicast("hi"));
        assert_eq!(
            Command::parse("/broadcast   x"),
            Ok(Command::Broadcast("  x".into()))
        );
        for blank in ["/msg bob    ", "@bob   ", "/broadcast   "] {
            assert!(
                matches!(Command::parse(blank), Err(CommandError::Usage(_))),
                "{blank:?}"
            );
        }
    }

    /// A `/` followed by a space names no command: not the word after
    /// it (`/ hello` is no `/hello`, did you mean `/help`?).
    #[test]
    fn a_slash_without_a_command_name_says_so() {
        for line in ["/", "/ ", "/  hello world", "/ /", "/\thelp"] {
            assert_eq!(
                Command::parse(line),
                Err(CommandError::NoCommandName),
                "{line:?}"
            );
        }
        assert_eq!(
            Command::parse("//etc/hosts"),
            Ok(Command::Text("/etc/hosts".into()))
        );
    }

    #[test]
    fn bad_lines_get_a_hint_not_a_message() {
        assert_eq!(
            Command::parse("/frobnicate"),
            Err(CommandError::Unknown {
                word: "frobnicate".into(),
                suggestion: None,
                download: None,
            })
        );
        assert!(matches!(
            Command::parse("/cancel"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("/msg bob"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("@bob"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("@bob:"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("/download"),
            Err(CommandError::Usage(_))
        ));
        // A path is no shared file's name: said so, not what the name breaks.
        for path in [
            "../etc/passwd",
            "/etc/passwd",
            "dir/file.txt",
            "dir\\file.txt",
        ] {
            assert_eq!(
                Command::parse(&format!("/download {path}"))
                    .unwrap_err()
                    .to_string(),
                format!(
                    "'{path}' is a path: /download takes the name of a shared file, as /list shows it"
                ),
            );
        }
        assert!(matches!(
            Command::parse("/download .hidden"),
            Err(CommandError::BadFile(_))
        ));
        assert!(matches!(
            Command::parse("/msg b/ad hi"),
            Err(CommandError::BadUser(_))
        ));
        // A mode and one user, nothing more: a word too many may be a
        // message typed after the command, which must not go anywhere.
        for line in [
            "/mode unicast",
            "/mode broadcast hello all",
            "/mode unicast bob hello bob",
        ] {
            assert_eq!(
                Command::parse(line),
                Err(CommandError::Usage(
                    "/mode broadcast | /mode unicast <user>"
                )),
                "{line}"
            );
        }
        assert_eq!(
            Command::parse("/mode unicast  bob "),
            Ok(Command::SetMode(Mode::Unicast(
                Username::new("bob").unwrap()
            )))
        );
        assert!(matches!(
            Command::parse("/sendfile"),
            Err(CommandError::Usage(_))
        ));
    }

    /// `/nick` is two edits from `/kick`: an IRC user gets imchat's way,
    /// not an operator's command.
    #[test]
    fn other_programs_commands_get_imchats_way() {
        assert_eq!(
            Command::parse("/nick carol").unwrap_err().to_string(),
            "imchat has no /nick: a name is chosen when connecting; /quit and connect again with another"
        );
        assert_eq!(
            Command::parse("/JOIN #rust").unwrap_err().to_string(),
            "imchat has no /join: everyone connected is in one room; /msg NAME TEXT talks to one user"
        );
        assert_eq!(
            Command::parse("/names").unwrap_err().to_string(),
            "imchat has no /names: /who lists who is online"
        );
        for (words, _) in ELSEWHERE {
            for word in *words {
                assert!(lookup(word).is_none(), "/{word} is a command");
                assert!(matches!(
                    Command::parse(&format!("/{word}")),
                    Err(CommandError::Elsewhere { .. })
                ));
            }
        }
    }

    #[test]
    fn a_mistyped_command_gets_the_nearest_one() {
        let err = Command::parse("/hlep").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown command /hlep; did you mean /help?"
        );
        assert_eq!(suggest("trasnfers"), Some("transfers"));
        assert_eq!(suggest("downlod"), Some("download"));
        assert_eq!(suggest("brodcast"), Some("broadcast"));
        assert_eq!(suggest("wh"), Some("who"), "the command it begins");
        assert_eq!(suggest("wo"), Some("who"), "a name before an alias");
        // Too far from everything, or shorter than the edits it needs.
        assert_eq!(suggest("frobnicate"), None);
        assert_eq!(one_typo_from_command("mgs"), Some("msg"));
        assert_eq!(one_typo_from_command("DWNLOAD"), Some("download"));
        assert_eq!(one_typo_from_command("ben"), Some("ban"));
        // Names two letters from any command, or short, are names.
        assert_eq!(one_typo_from_command("bob"), None);
        assert_eq!(one_typo_from_command("al"), None);
        assert_eq!(one_typo_from_command("carol"), None);
        assert_eq!(suggest("x"), None);
        assert_eq!(
            Command::parse("/xyzzy").unwrap_err().to_string(),
            "unknown command /xyzzy; type /help for the list"
        );
        assert!(matches!(
            Command::parse("/help nosuch"),
            Err(CommandError::NoHelp { .. })
        ));
    }

    /// `@user <text>` is in the aliases `/help` lists: `/help @`, `/help
    /// @user` (or any name after the `@`) show the private message's help.
    #[test]
    fn help_on_the_at_alias_is_the_private_message_s() {
        for line in ["/help @", "/help @user", "/help @Bob", "/? @"] {
            assert_eq!(
                Command::parse(line),
                Ok(Command::Help(Some("unicast"))),
                "{line}"
            );
        }
        assert_eq!(help_lines(80, Some("unicast"))[0], "/unicast <user> <text>");
    }

    /// A command that takes nothing refuses words after it, as `/mode`
    /// does: they may be a message typed after it, which must not be
    /// dropped in silence. Spaces alone are nothing.
    #[test]
    fn commands_that_take_nothing_refuse_extra_words() {
        for (line, usage) in [
            ("/clear extra", "/clear"),
            ("/nicklist x", "/nicklist"),
            ("/who extra", "/who"),
            ("/users bob", "/who"),
            ("/transfers extra", "/transfers"),
            ("/access x", "/access"),
            ("/LIST y", "/list"),
            ("/files z", "/files"),
            ("/downloads z", "/files"),
            ("/bans all", "/bans"),
            ("/unregister now", "/unregister alone"),
        ] {
            assert_eq!(
                Command::parse(line),
                Err(CommandError::Usage(usage)),
                "{line}"
            );
        }
        assert!(matches!(
            Command::parse("/register hunter2"),
            Err(CommandError::Usage(u)) if u.starts_with("/register alone")
        ));
        assert_eq!(Command::parse("/clear  "), Ok(Command::Clear));
        assert_eq!(Command::parse("/nicklist"), Ok(Command::NickList));
        assert_eq!(Command::parse("/who "), Ok(Command::Who));
        assert_eq!(Command::parse("/transfers "), Ok(Command::Transfers));
        assert_eq!(Command::parse("/access"), Ok(Command::FilesAccess));
        assert_eq!(Command::parse("/list"), Ok(Command::ListFiles));
    }

    /// One rule for all: every command whose help shows it with nothing
    /// after it, and never with an argument, refuses one, under each of
    /// its names and aliases.
    #[test]
    fn every_command_listed_without_arguments_refuses_them() {
        for info in COMMANDS {
            let usages: Vec<&str> = info
                .rows
                .iter()
                .flat_map(|(usage, _)| usage.split(", "))
                .collect();
            for name in info.names {
                let slash = format!("/{name}");
                let forms: Vec<&&str> = usages
                    .iter()
                    .filter(|u| **u == slash || u.starts_with(&format!("{slash} ")))
                    .collect();
                if forms.is_empty() || forms.iter().any(|u| **u != slash) {
                    continue;
                }
                let words = if info.names.len() == 1 {
                    std::iter::once(*name)
                        .chain(info.aliases.iter().copied())
                        .collect()
                } else {
                    vec![*name]
                };
                for word in words {
                    let line = format!("/{word} extra");
                    assert!(
                        matches!(Command::parse(&line), Err(CommandError::Usage(_))),
                        "{line}: {:?}",
                        Command::parse(&line)
                    );
                }
            }
        }
    }

    /// `/help` takes one word: a topic, the rest ignored.
    #[test]
    fn help_takes_its_first_word_as_the_topic() {
        assert_eq!(
            Command::parse("/help msg extra"),
            Ok(Command::Help(Some("unicast")))
        );
        assert_eq!(
            Command::parse("/help /download notes.txt"),
            Ok(Command::Help(Some("download")))
        );
        assert_eq!(
            Command::parse("/help bob hi").unwrap_err().to_string(),
            Command::parse("/help bob").unwrap_err().to_string()
        );
        // A topic of slashes is none, not the whole list.
        for line in ["/help //", "/? ///"] {
            let err = Command::parse(line).map_err(|e| e.to_string());
            assert!(
                err.as_ref().is_err_and(|e| e.starts_with("no help for /")),
                "{line}: {err:?}"
            );
        }
    }

    #[test]
    fn help_on_no_command_says_so_and_lists_the_topics() {
        let topics = "broadcast, unicast, mode, who, files, access, list, download, \
                      sendfile, accept, decline, transfers, cancel, me, ignore, unignore, clear, nicklist, \
                      register, unregister, kick, ban, unban, bans, help, quit";
        // A user's name (two letters from /ban) is no mistyped command.
        for line in ["/help bob", "/help /bob", "/? Bob"] {
            let err = Command::parse(line).unwrap_err().to_string();
            assert!(
                err.starts_with("no help for bob; the topics are the commands: "),
                "{line}: {err}"
            );
            assert!(err.ends_with(topics), "{line}: {err}");
            assert!(!err.contains("/ban"), "{line}: {err}");
        }
        // One typo from a command, or the start of only one: that one.
        for (line, meant) in [
            ("/help downlod", "download"),
            ("/help trasnfers", "transfers"),
            ("/help msgg", "msg"),
            ("/help down", "download"),
            ("/help nick", "nicklist"),
        ] {
            let topic = line.rsplit(' ').next().unwrap_or_default();
            assert_eq!(
                Command::parse(line).unwrap_err().to_string(),
                format!("no help for {topic}; did you mean /help {meant}?"),
            );
        }
        // The start of several: the list.
        let err = Command::parse("/help un").unwrap_err().to_string();
        assert!(err.ends_with(topics), "{err}");
    }

    #[test]
    fn at_everyone_points_to_a_plain_line() {
        for line in ["@everyone hello", "@All look"] {
            let err = Command::parse(line).unwrap_err();
            assert!(
                matches!(err, CommandError::AtEveryone(_)),
                "{line}: {err:?}"
            );
            assert!(
                err.to_string()
                    .contains("a plain line already goes to everyone"),
                "{err}"
            );
        }
        // Another reserved name is still an invalid username.
        assert!(matches!(
            Command::parse("@admin hi"),
            Err(CommandError::BadUser(_))
        ));
    }

    #[test]
    fn the_classroom_programs_bare_commands_get_a_note() {
        for (text, note) in [
            ("exit", Some("(sent as chat: to leave, type /quit)")),
            (" Exit ", Some("(sent as chat: to leave, type /quit)")),
            (
                "access server files",
                Some("(sent as chat: for the shared folder, type /files)"),
            ),
            (
                "List Server Files",
                Some("(sent as chat: to list the shared files, type /files)"),
            ),
            (
                "download image1.png",
                Some("(sent as chat: to download it, type /download image1.png)"),
            ),
            // Chat that only starts like one.
            ("download meeting notes.txt", None),
            ("exit now please", None),
            ("download the new version", None),
            ("download it.", None),
            ("files", None),
            ("hello", None),
        ] {
            assert_eq!(classroom_hint(text).as_deref(), note, "{text:?}");
        }
    }

    #[test]
    fn a_file_name_as_typed_downloads_that_file() {
        for name in [
            "  leading space.txt",
            "'quoted'",
            "'half.txt",
            "meeting notes.txt",
            "plain.txt",
        ] {
            let typed = typed_file_name(name);
            assert_eq!(
                Command::parse(&format!("/download {typed}")),
                Ok(Command::Download(FileName::new(name).unwrap())),
                "{name:?} typed as {typed:?}"
            );
        }
        // Quoted only where it has to be.
        assert_eq!(typed_file_name("meeting notes.txt"), "meeting notes.txt");
        assert_eq!(typed_file_name(" x"), "\" x\"");
    }

    #[test]
    fn an_unknown_command_that_looks_like_a_file_points_to_download() {
        assert_eq!(
            Command::parse("/demofile.txt").unwrap_err().to_string(),
            "unknown command /demofile.txt; type /help for the list; \
             to download a shared file: /download demofile.txt"
        );
        // As typed (case kept), the rest of the line with it.
        assert_eq!(
            Command::parse("/Meeting.notes v2.txt")
                .unwrap_err()
                .to_string(),
            "unknown command /meeting.notes; type /help for the list; \
             to download a shared file: /download Meeting.notes v2.txt"
        );
        // Whatever the case of the name and of its extension.
        for name in ["demofile.TXT", "DEMOFILE.TXT", "Demofile.Txt", "notes.MD"] {
            let text = Command::parse(&format!("/{name}")).unwrap_err().to_string();
            assert!(
                text.ends_with(&format!("; to download a shared file: /download {name}")),
                "/{name}: {text}"
            );
        }
        // No dot, or not a file name: no pointer.
        for line in ["/xyzzy", "/xyzzy a.txt", "/../etc/passwd"] {
            let text = Command::parse(line).unwrap_err().to_string();
            assert!(!text.contains("/download"), "{line}: {text}");
        }
    }

    #[test]
    fn every_name_and_alias_parses_and_is_listed_for_completion() {
        let names = names();
        for n in [
            "/broadcast",
            "/boardcast",
            "/all",
            "/msg",
            "/tell",
            "/w",
            "/who",
            "/users",
            "/files",
            "/file",
            "/downloads",
            "/get",
            "/send",
            "/cancel",
            "/transfers",
            "/clear",
            "/nicklist",
            "/help",
            "/quit",
            "/exit",
            "/me",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        }
        for n in &names {
            // Each one is a command (some need arguments, never unknown).
            let parsed = Command::parse(n);
            assert!(
                !matches!(parsed, Err(CommandError::Unknown { .. })),
                "{n}: {parsed:?}"
            );
        }
    }

    #[test]
    fn help_fits_the_width_and_lists_the_aliases() {
        for width in [20, 40, 60, 79, 80, 100, 200] {
            let lines = help_lines(width, None);
            for l in &lines {
                assert!(l.chars().count() <= width, "{width}: {l:?} too wide");
            }
            let all = lines.join(" ");
            for word in [
                "/sendfile",
                "<path>",
                "/cancel",
                "/boardcast",
                "/tell",
                "/exit",
                "@user",
            ] {
                assert!(all.contains(word), "{width}: {word} missing");
            }
            let flat = all.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains("/user <text>"),
                "{width}: /user <text> missing"
            );
        }
        // At 80 columns the heading and each usage stay on their lines.
        let lines = help_lines(80, None);
        assert_eq!(lines[0], HELP_HEADING);
        assert!(lines
            .iter()
            .any(|l| l.starts_with("  /sendfile <path> [user]  push a local file")));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("aliases: /boardcast /all /msg")));
        // Narrow: the description goes under the usage.
        let narrow = help_lines(40, None);
        let at = narrow
            .iter()
            .position(|l| l.trim_end() == "  /sendfile <path> [user]")
            .expect("usage on its own row");
        assert!(
            narrow[at + 1].starts_with("      push a local file"),
            "{narrow:?}"
        );
    }

    #[test]
    fn help_for_one_command_shows_its_usage_and_aliases() {
        let lines = help_lines(80, Some("unicast"));
        assert_eq!(lines[0], "/unicast <user> <text>");
        assert!(lines[1].starts_with("    send to one user"));
        assert_eq!(lines.last().unwrap(), "aliases: /msg /tell /w");
        let narrow = help_lines(16, Some("download"));
        assert!(narrow.iter().all(|l| l.chars().count() <= 16), "{narrow:?}");
        assert!(narrow.join(" ").contains("/get"));
    }

    #[test]
    fn offline_only_commands_that_need_no_server_work() {
        for line in [
            "/help",
            "/clear",
            "/nicklist",
            "/mode broadcast",
            "/mode",
            "/transfers",
            "/quit",
            "",
        ] {
            assert!(works_offline(&Command::parse(line).unwrap()), "{line}");
        }
        for line in [
            "hi",
            "/who",
            "/mode unicast bob",
            "/download a.txt",
            "/me waves",
            "/cancel 1",
        ] {
            assert!(!works_offline(&Command::parse(line).unwrap()), "{line}");
        }
    }
}
