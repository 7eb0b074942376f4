//! A bot that drives the sans-IO [`ClientSession`] over a socket of its
//! own, with no help from the `blocking` module: the loop to write when
//! you bring your own IO (an event loop, a bridge to another network). It
//! answers `!ping` with `pong`, privately when asked privately.
//!
//! `cargo run -p imchat-core --example pingbot -- 127.0.0.1:7878 [name]`
//!
//! The session never reads or writes: each turn of the loop hands it what
//! arrived ([`ClientSession::handle_message`]), the time
//! ([`ClientSession::handle_timeout`]), and takes what it wants sent
//! ([`ClientSession::poll_transmit`]) and what happened
//! ([`ClientSession::poll_event`]).

use std::error::Error;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use imchat_core::{
    inert, ClientEvent, ClientSession, Decoder, Encode, Limits, ServerMessage, Username,
};

/// Runs the bot until the server shuts down or closes the connection, or
/// until `until` passes (then it quits).
///
/// # Errors
///
/// An invalid name, a connection that fails or breaks, bytes that are not
/// imchat, a refusal ([`ClientEvent::Refused`]), and the session's end when
/// it was not the server's doing: the server stopped answering
/// ([`ClientEvent::TimedOut`]), an operator removed the bot
/// ([`ClientEvent::Kicked`]) or another connection took its session
/// ([`ClientEvent::Replaced`]).
pub fn run(addr: &str, name: &str, until: Option<Instant>) -> Result<(), Box<dyn Error>> {
    run_with(addr, name, Limits::default(), until)
}

/// [`run`] with limits of the caller's (the keepalive's times, say).
///
/// # Errors
///
/// As for [`run`].
pub fn run_with(
    addr: &str,
    name: &str,
    limits: Limits,
    until: Option<Instant>,
) -> Result<(), Box<dyn Error>> {
    let mut socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let mut decoder = Decoder::<ServerMessage>::new(limits.max_frame);
    let mut session = ClientSession::new(Username::new(name)?, limits, Instant::now());
    let mut frames = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        // What happened: answer it (which queues messages to send).
        while let Some(event) = session.poll_event() {
            match event {
                // Once welcomed, read frames as large as the server sends.
                ClientEvent::Welcome { .. } => decoder.set_max_frame(session.frame_limit()),
                // The server's words: made inert, as all peer text to show.
                ClientEvent::Refused { reason, .. } => {
                    return Err(format!("refused: {}", inert(&reason)).into());
                }
                // The session ended, and not by the server's shutdown.
                ClientEvent::TimedOut => return Err("the server stopped answering".into()),
                ClientEvent::Kicked { text } | ClientEvent::Replaced { text } => {
                    return Err(inert(&text).into())
                }
                // Said before the bot joined (replayed to it): not for it to answer.
                ClientEvent::Chat(chat) if !chat.history && chat.text.trim() == "!ping" => {
                    // Privately when asked privately.
                    session.send_chat(chat.reply_to(), "pong")?;
                }
                _ => {}
            }
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            session.quit("time is up");
        }
        // What the session wants sent, in one write.
        frames.clear();
        while let Some(message) = session.poll_transmit() {
            message.encode(&mut frames);
        }
        socket.write_all(&frames)?;
        if session.is_closed() {
            return Ok(());
        }
        // Wait for bytes, at most until the session's next timer (a ping
        // to send, an answer that is late) or the bot's own end.
        let now = Instant::now();
        let wake = [session.poll_timeout(), until].into_iter().flatten().min();
        let wait = wake.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match socket.read(&mut buf) {
            Ok(0) => return Ok(()), // the server closed the connection
            Ok(n) => {
                decoder.feed(&buf[..n]);
                let now = Instant::now();
                while let Some(message) = decoder.next_message()? {
                    session.handle_message(message, now);
                }
                if decoder.buffered() > 0 {
                    // Part of a long frame: the server is alive.
                    session.handle_bytes(now);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
        session.handle_timeout(Instant::now());
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(addr) = args.next() else {
        eprintln!("usage: pingbot <host:port> [name]");
        return ExitCode::from(2);
    };
    let name = args.next().unwrap_or_else(|| "pingbot".to_string());
    match run(&addr, &name, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pingbot: {e}");
            ExitCode::FAILURE
        }
    }
}
