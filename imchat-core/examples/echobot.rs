//! A bot on the blocking client: it sends every private message back to its
//! sender reversed, and answers `!who`, public or private, with a private
//! message naming who is online.
//!
//! `cargo run -p imchat-core --example echobot -- 127.0.0.1:7878 [name]`

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use imchat_core::blocking::{Client, ConnectOptions};
use imchat_core::{inert, ClientEvent};

/// Runs the bot until the server shuts down (or the connection is lost, an
/// error), or until `until` passes (then it quits).
///
/// # Errors
///
/// A [`ConnectError`](imchat_core::blocking::ConnectError) when it cannot
/// join (unreachable, name refused), a
/// [`ClientError`](imchat_core::blocking::ClientError) when the connection
/// breaks or the server closes it without a shutdown notice, and the
/// session's own end when it was not the server's shutdown: the server
/// stopped answering, an operator removed the bot, or another connection
/// took its session.
pub fn run(addr: &str, name: &str, until: Option<Instant>) -> Result<(), Box<dyn Error>> {
    run_with(addr, name, ConnectOptions::default(), until)
}

/// [`run`] with connect options of the caller's (limits, timeouts).
///
/// # Errors
///
/// As for [`run`].
pub fn run_with(
    addr: &str,
    name: &str,
    options: ConnectOptions,
    until: Option<Instant>,
) -> Result<(), Box<dyn Error>> {
    let mut bot = Client::connect(addr, name, options)?;
    let mut asked = Vec::new(); // who sent `!who`: one `Who` answer each, in order
    while bot.is_open() && until.is_none_or(|t| Instant::now() < t) {
        match bot.next_event(Duration::from_secs(1))? {
            // The session ended, and not by the server's shutdown: an
            // error, for whoever runs the bot to see (and restart it or not).
            Some(ClientEvent::TimedOut) => return Err("the server stopped answering".into()),
            // The server's words: made inert, as all peer text to show.
            Some(ClientEvent::Kicked { text } | ClientEvent::Replaced { text }) => {
                return Err(inert(&text).into())
            }
            // Said before the bot joined (replayed to it): not for it to answer.
            Some(ClientEvent::Chat(chat)) if chat.history => {}
            Some(ClientEvent::Chat(chat)) if chat.text.trim() == "!who" => {
                asked.push(chat.from);
                bot.who()?;
            }
            Some(ClientEvent::Chat(chat)) if chat.private && !chat.text.is_empty() => {
                bot.send_private(&chat.from, &chat.text.chars().rev().collect::<String>())?;
            }
            Some(ClientEvent::Who { users }) if !asked.is_empty() => {
                let online: Vec<String> = users
                    .iter()
                    .map(|u| match u.away_secs {
                        Some(secs) => format!("{} (away {secs} s)", u.name),
                        None => u.name.to_string(),
                    })
                    .collect();
                bot.send_private(&asked.remove(0), &format!("online: {}", online.join(", ")))?;
            }
            _ => {}
        }
    }
    Ok(bot.quit("")?)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: echobot <host:port> [name]");
        return ExitCode::FAILURE;
    };
    let name = args.next().unwrap_or_else(|| "echobot".to_string());
    match run(&addr, &name, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echobot: {e}");
            ExitCode::FAILURE
        }
    }
}
