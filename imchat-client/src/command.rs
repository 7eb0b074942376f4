//! The client's command language: one typed line in, one [`Command`] out.

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
    },
    /// `/accept [id]`: take a file someone offers (the only one waiting
    /// when no id is given).
    Accept(Option<u32>),
    /// `/decline [id]`: refuse a file someone offers.
    Decline(Option<u32>),
    /// `/help`.
    Help,
    /// `/me <action>`: an action, sent in the current [`Mode`] (`* alice waves`).
    Me(String),
    /// `/quit [reason]`, `/exit [reason]`: leave, with a parting text the others see.
    Quit(String),
    /// An empty line.
    Nothing,
}

/// A line that looked like a command but was not a valid one. Show it; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// An unknown `/word`.
    #[error("unknown command /{0}; type /help for the list")]
    Unknown(String),
    /// A command without what it needs.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// A bad user name in a command.
    #[error("invalid username: {0}")]
    BadUser(NameError),
    /// A bad file name in a command.
    #[error("invalid file name: {0}")]
    BadFile(NameError),
}

/// The command list, for `/help`.
pub const HELP: &str = "\
Commands (plain text is sent in the current mode, broadcast by default):
  /broadcast <text>          send to everyone else (alias /boardcast)
  /unicast <user> <text>     send to one user (aliases /msg <user> <text>, @user <text>)
  /mode broadcast            plain text goes to everyone (default)
  /mode unicast <user>       plain text goes to <user>
  /who                       who is online
  /files                     access the shared folder: file count and list (aliases /file, /downloads)
  /access, /list             only the count, only the list
  /download <name>           download a shared file into your download folder
  /sendfile <path> [user]    push a local file to everyone else, or to one user
  /accept [id]               take a file someone offers you (the one waiting, or #id)
  /decline [id]              refuse a file someone offers you
  /me <action>               an action, sent in the current mode: * you <action>
  /help                      this list
  /quit [reason]             leave, with a parting text for the others (alias /exit)";

fn user(s: &str) -> Result<Username, CommandError> {
    Username::new(s).map_err(CommandError::BadUser)
}

fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
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

/// Splits `/sendfile` arguments into a path and an optional user: a quoted
/// path may hold spaces; otherwise the last word is a user when there are two or more.
fn sendfile_args(rest: &str) -> Result<(String, Option<Username>), CommandError> {
    const USAGE: &str = "/sendfile <path> [user]";
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(CommandError::Usage(USAGE));
    }
    for q in ['"', '\''] {
        if let Some(body) = rest.strip_prefix(q) {
            let end = body.find(q).ok_or(CommandError::Usage(USAGE))?;
            let path = &body[..end];
            let after = body[end + 1..].trim();
            let to = if after.is_empty() {
                None
            } else {
                Some(user(after)?)
            };
            if path.is_empty() {
                return Err(CommandError::Usage(USAGE));
            }
            return Ok((path.to_string(), to));
        }
    }
    match rest.rsplit_once(char::is_whitespace) {
        Some((path, last)) => Ok((path.trim().to_string(), Some(user(last)?))),
        None => Ok((rest.to_string(), None)),
    }
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
            let (to, text) = split_word(rest);
            if to.is_empty() || text.is_empty() {
                return Err(CommandError::Usage("@user <text>"));
            }
            return Ok(Command::Unicast {
                to: user(to)?,
                text: text.to_string(),
            });
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Ok(Command::Text(line.to_string()));
        };
        let (word, args) = split_word(rest);
        let word = word.to_lowercase();
        let cmd = match word.as_str() {
            "broadcast" | "boardcast" | "all" => {
                if args.is_empty() {
                    return Err(CommandError::Usage("/broadcast <text>"));
                }
                Command::Broadcast(args.to_string())
            }
            "unicast" | "msg" | "tell" | "w" => {
                let (to, text) = split_word(args);
                if to.is_empty() || text.is_empty() {
                    return Err(CommandError::Usage("/unicast <user> <text>"));
                }
                Command::Unicast {
                    to: user(to)?,
                    text: text.to_string(),
                }
            }
            "mode" => {
                let (m, who) = split_word(args);
                match m.to_lowercase().as_str() {
                    "" => Command::ShowMode,
                    "broadcast" | "boardcast" => Command::SetMode(Mode::Broadcast),
                    "unicast" if !who.is_empty() => {
                        Command::SetMode(Mode::Unicast(user(who.trim())?))
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
                Command::Download(FileName::new(name).map_err(CommandError::BadFile)?)
            }
            "sendfile" | "send" => {
                let (path, to) = sendfile_args(args)?;
                Command::SendFile { path, to }
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
            "help" | "?" => Command::Help,
            "me" => {
                if args.trim().is_empty() {
                    return Err(CommandError::Usage("/me <action>"));
                }
                Command::Me(args.to_string())
            }
            "quit" | "exit" => Command::Quit(args.trim().to_string()),
            _ => return Err(CommandError::Unknown(word)),
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
                },
            ),
            (
                "/sendfile ./dir/x.txt bob",
                Command::SendFile {
                    path: "./dir/x.txt".into(),
                    to: Some(u("bob")),
                },
            ),
            (
                "/SendFile \"my file.txt\"",
                Command::SendFile {
                    path: "my file.txt".into(),
                    to: None,
                },
            ),
            (
                "/sendfile \"my file.txt\" bob",
                Command::SendFile {
                    path: "my file.txt".into(),
                    to: Some(u("bob")),
                },
            ),
            ("/help", Command::Help),
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
        assert!(HELP.contains("/accept [id]") && HELP.contains("/decline [id]"));
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

    #[test]
    fn bad_lines_get_a_hint_not_a_message() {
        assert_eq!(
            Command::parse("/frobnicate"),
            Err(CommandError::Unknown("frobnicate".into()))
        );
        assert!(matches!(
            Command::parse("/msg bob"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("@bob"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("/download"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("/download ../../etc/passwd"),
            Err(CommandError::BadFile(_))
        ));
        assert!(matches!(
            Command::parse("/msg b/ad hi"),
            Err(CommandError::BadUser(_))
        ));
        assert!(matches!(
            Command::parse("/mode unicast"),
            Err(CommandError::Usage(_))
        ));
        assert!(matches!(
            Command::parse("/sendfile"),
            Err(CommandError::Usage(_))
        ));
    }
}
